"""Prediction requests and answers. Shared by the server (validation) and the predict worker."""
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_INPUTS = 64
MAX_INPUT_CHARS = 4000


MAX_TURNS = 64


class ChatTurn(BaseModel):
    """One turn of a conversation sent to a chat run."""
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: Annotated[str, Field(max_length=MAX_INPUT_CHARS)]


Conversation = Annotated[list[ChatTurn], Field(min_length=1, max_length=MAX_TURNS)]


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: list[Annotated[str, Field(min_length=1, max_length=MAX_INPUT_CHARS)] | Conversation] = Field(
        min_length=1, max_length=MAX_INPUTS,
        description="Texts to run the model on. Classification runs trained with a second text column "
                    "take 'text<TAB>second text'. Chat runs (columns.messages or columns.chat_template) "
                    "answer in their chat template: a text is one user turn, or send a conversation as a "
                    "list of {role, content} turns (system/user/assistant); the answer is the next assistant turn.")
    compare_base: bool = Field(False, description="Also answer with the base model, without what the run trained.")
    max_new_tokens: int = Field(32, ge=1, le=512, description="Causal LM: tokens to generate per input.")
    temperature: float = Field(0.0, ge=0, le=5, description="Causal LM: 0 = greedy decoding, above 0 = sampling.")


class PredictResponse(BaseModel):
    # classification: {"label": str, "probs": {label: p}}; causal LM: {"text": str}
    outputs: list[dict]
    base_outputs: list[dict] | None = None
