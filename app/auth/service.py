"""Accounts: users, projects and membership, API tokens, browser sessions, login rate limits."""
import hashlib
import re
from datetime import timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.auth.models import ApiToken, BrowserSession, LoginFailure, Project, ProjectMember, User
from app.auth.security import DUMMY_HASH, digest, hash_password, new_token, verify_password
from app.db import utcnow
from app.metrics import notify

USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MIN_PASSWORD = 8
SESSION_DAYS = 14
MAX_FAILURES = 5  # per (username, client address)
MAX_ADDRESS_FAILURES = 30  # per client address, across usernames
FAILURE_WINDOW = timedelta(minutes=15)


class AuthError(ValueError):
    """A problem worded for the person at the keyboard."""


# users ---------------------------------------------------------------------------------------

def count_users(session: Session) -> int:
    return session.scalar(select(func.count(User.id))) or 0


def get_user(session: Session, *, user_id: int) -> User | None:
    return session.get(User, user_id)


def get_user_by_name(session: Session, *, username: str) -> User | None:
    return session.scalar(select(User).where(func.lower(User.username) == username.strip().lower()))


def all_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.id)))


def first_admin(session: Session) -> User | None:
    return session.scalar(select(User).where(User.is_admin.is_(True)).order_by(User.id))


def create_user(session: Session, *, username: str, password: str, is_admin: bool = False) -> User:
    """A user with a personal project; the very first user also joins the pre-accounts 'Default' project."""
    username = username.strip()
    if not USERNAME.match(username):
        raise AuthError("A username is 1–64 letters, digits, '.', '_' or '-', starting with a letter or digit.")
    if len(password) < MIN_PASSWORD:
        raise AuthError(f"The password must be at least {MIN_PASSWORD} characters long.")
    if get_user_by_name(session, username=username) is not None:
        raise AuthError(f"The username {username!r} is taken.")
    first = count_users(session) == 0
    user = User(username=username, password_hash=hash_password(password), is_admin=is_admin)
    session.add(user)
    session.flush()
    project = Project(name=f"{username}'s project")
    session.add(project)
    session.flush()
    session.add(ProjectMember(project_id=project.id, user_id=user.id, role="owner"))
    if first:
        for (pid,) in session.execute(select(Project.id).where(Project.name == "Default", Project.id != project.id)):
            session.add(ProjectMember(project_id=pid, user_id=user.id, role="owner"))
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise AuthError(f"The username {username!r} is taken.") from None
    return user


def create_first_admin(session: Session, *, username: str, password: str) -> User:
    """First-run setup: an admin, only while nobody has an account. Two setups racing both insert,
    then each checks who came first; the later one removes itself and loses."""
    if count_users(session):
        raise AuthError("peftlab already has an admin; sign in instead.")
    user = create_user(session, username=username, password=password, is_admin=True)
    first_id = session.scalar(select(User.id).order_by(User.id).limit(1))
    if first_id != user.id:
        session.execute(delete(Project).where(Project.id.in_(
            select(ProjectMember.project_id).where(ProjectMember.user_id == user.id))))
        session.delete(user)
        session.commit()
        raise AuthError("peftlab already has an admin; sign in instead.")
    return user


def authenticate(session: Session, *, username: str, password: str) -> User | None:
    user = get_user_by_name(session, username=username)
    if user is None:
        verify_password(DUMMY_HASH, password)  # same cost as a real check
        return None
    return user if verify_password(user.password_hash, password) else None


# login rate limit ----------------------------------------------------------------------------
# Failed sign-ins count per (username, client address): guessing one user's password from one place
# stops after MAX_FAILURES, while that user still signs in from anywhere else, so nobody can lock
# another person out from elsewhere. A looser count per address across usernames stops one place
# from spraying guesses over many accounts. Either limit refuses the right password too while it
# lasts (else the guessing would go on); it only ever affects the address that failed.

def _failure_keys(username: str, address: str) -> tuple[str, str]:
    pair = "pair:" + hashlib.sha256(f"{username.strip().lower()}\n{address}".encode()).hexdigest()
    place = f"ip:{address}" if len(address) <= 64 else "ip:" + hashlib.sha256(address.encode()).hexdigest()
    return pair, place


def too_many_failures(session: Session, *, username: str, address: str) -> bool:
    since = utcnow() - FAILURE_WINDOW
    session.execute(delete(LoginFailure).where(LoginFailure.at < since))
    pair, place = _failure_keys(username, address)
    counts = dict(session.execute(select(LoginFailure.key, func.count(LoginFailure.id))
                                  .where(LoginFailure.key.in_([pair, place]), LoginFailure.at >= since)
                                  .group_by(LoginFailure.key)).all())
    session.commit()
    return counts.get(pair, 0) >= MAX_FAILURES or counts.get(place, 0) >= MAX_ADDRESS_FAILURES


def record_failure(session: Session, *, username: str, address: str) -> None:
    session.add_all(LoginFailure(key=k) for k in _failure_keys(username, address))
    session.commit()


def clear_failures(session: Session, *, username: str, address: str) -> None:
    """A successful sign-in forgives that user's failures from that address (not the address's)."""
    session.execute(delete(LoginFailure).where(LoginFailure.key == _failure_keys(username, address)[0]))
    session.commit()


# browser sessions ----------------------------------------------------------------------------

def start_session(session: Session, *, user: User) -> tuple[str, BrowserSession]:
    """Returns the cookie value (only its digest is stored) and the session row with its CSRF token."""
    token = new_token("pls_")
    row = BrowserSession(token_hash=digest(token), user_id=user.id, csrf_token=new_token(""),
                         expires_at=utcnow() + timedelta(days=SESSION_DAYS))
    session.add(row)
    session.commit()
    return token, row


def session_for(session: Session, *, cookie: str) -> BrowserSession | None:
    row = session.scalar(select(BrowserSession).where(BrowserSession.token_hash == digest(cookie)))
    if row is None or row.expires_at < utcnow():
        return None
    return row


def end_session(session: Session, *, cookie: str) -> None:
    session.execute(delete(BrowserSession).where(BrowserSession.token_hash == digest(cookie)))
    notify.changed(session, notify.EVERY_RUN)  # live streams opened with it end now (they check at each read)
    session.commit()


# API tokens ----------------------------------------------------------------------------------

def create_token(session: Session, *, user: User, name: str) -> tuple[str, ApiToken]:
    token = new_token()
    row = ApiToken(user_id=user.id, name=(name.strip() or "token")[:200], token_hash=digest(token), prefix=token[:10])
    session.add(row)
    session.commit()
    return token, row


def user_for_token(session: Session, *, token: str) -> User | None:
    """Looked up on every request, so a revoked token stops working at once."""
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == digest(token), ApiToken.revoked_at.is_(None)))
    if row is None:
        return None
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at > timedelta(minutes=1):  # not a write per request
        row.last_used_at = now
        session.commit()
    return session.get(User, row.user_id)


def valid_digests(session: Session, *, tokens: set[str], sessions: set[str]) -> tuple[set[str], set[str]]:
    """Of these token and browser-session digests, the ones still valid (one query each, for many streams)."""
    valid_tokens = set(session.scalars(select(ApiToken.token_hash).where(
        ApiToken.token_hash.in_(tokens), ApiToken.revoked_at.is_(None)))) if tokens else set()
    valid_sessions = set(session.scalars(select(BrowserSession.token_hash).where(
        BrowserSession.token_hash.in_(sessions), BrowserSession.expires_at >= utcnow()))) if sessions else set()
    return valid_tokens, valid_sessions


def tokens_of(session: Session, *, user: User) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id.desc())))


def revoke_token(session: Session, *, user: User, token_id: int) -> bool:
    res = session.execute(update(ApiToken).where(ApiToken.id == token_id, ApiToken.user_id == user.id,
                                                 ApiToken.revoked_at.is_(None)).values(revoked_at=utcnow()))
    if res.rowcount == 1:
        notify.changed(session, notify.EVERY_RUN)  # live streams opened with it end now (they check at each read)
    session.commit()
    return res.rowcount == 1


# projects ------------------------------------------------------------------------------------

def project_ids(session: Session, *, user: User) -> set[int] | None:
    """The projects whose objects this user may see; None means every project (admins)."""
    if user.is_admin:
        return None
    return set(session.scalars(select(ProjectMember.project_id).where(ProjectMember.user_id == user.id)))


def projects_of(session: Session, *, user: User) -> list[tuple[Project, str]]:
    rows = session.execute(select(Project, ProjectMember.role).join(ProjectMember, ProjectMember.project_id == Project.id)
                           .where(ProjectMember.user_id == user.id).order_by(Project.id))
    return [(p, role) for p, role in rows]


def default_project_id(session: Session, *, user: User) -> int:
    owned = session.scalar(select(ProjectMember.project_id).where(ProjectMember.user_id == user.id,
                                                               ProjectMember.role == "owner").order_by(ProjectMember.project_id))
    if owned is None:  # e.g. an admin whose personal project was deleted
        project = Project(name=f"{user.username}'s project")
        session.add(project)
        session.flush()
        session.add(ProjectMember(project_id=project.id, user_id=user.id, role="owner"))
        session.commit()
        return project.id
    return owned


def role_in(session: Session, *, user: User, project_id: int) -> str | None:
    return session.scalar(select(ProjectMember.role).where(ProjectMember.project_id == project_id,
                                                        ProjectMember.user_id == user.id))


def create_project(session: Session, *, user: User, name: str) -> Project:
    project = Project(name=name.strip()[:200])
    session.add(project)
    session.flush()
    session.add(ProjectMember(project_id=project.id, user_id=user.id, role="owner"))
    session.commit()
    return project


def members(session: Session, *, project_id: int) -> list[tuple[User, str]]:
    rows = session.execute(select(User, ProjectMember.role).join(ProjectMember, ProjectMember.user_id == User.id)
                           .where(ProjectMember.project_id == project_id).order_by(User.username))
    return [(u, r) for u, r in rows]


def add_member(session: Session, *, project_id: int, username: str) -> User:
    user = get_user_by_name(session, username=username)
    if user is None:
        raise AuthError(f"There is no user {username!r}.")
    if role_in(session, user=user, project_id=project_id) is None:
        session.add(ProjectMember(project_id=project_id, user_id=user.id, role="member"))
        session.commit()
    return user


def remove_member(session: Session, *, project_id: int, user_id: int) -> bool:
    res = session.execute(delete(ProjectMember).where(ProjectMember.project_id == project_id,
                                                      ProjectMember.user_id == user_id, ProjectMember.role != "owner"))
    session.commit()
    return res.rowcount == 1
