"""kombu's filesystem transport (the embedded default broker), with messages that appear whole.

kombu writes a message file in place. A consumer that lists the folder between the file's creation
and its write moves an empty file away, fails to decode it, and the message is gone (the reaper
re-sends the run, but only after requeue_after_seconds). Here a message is written under a name
consumers skip and renamed into place, which is atomic on one filesystem: a consumer sees a message
whole or not at all.
"""
import os
import uuid
from time import monotonic_ns

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

TRANSPORT = f"{__name__}:Transport"


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        # Consumers take the first name in sorted order: a zero-padded monotonic clock in nanoseconds keeps
        # messages sent within one millisecond in order (kombu's millisecond stamp then sorts by the random
        # uuid). The partial file starts with a dot, so it never matches "<queue>.msg" in a listing.
        name = f"{monotonic_ns():020d}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f".{name}.part")
        try:
            with open(partial, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            try:
                os.unlink(partial)
            except OSError:
                pass
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
