"""The IPN backend state machine as an explicit (state, input) -> state table (pure, no I/O).

Theory of operation (shape of tailscale's ipn.State / ipnlocal.nextStateLocked):

    NoState --START_LOGGED_OUT--> NeedsLogin --LOGGED_IN--> Starting --ENGINE_UP--> Running
       |                              |  ^                    |   ^                    |
       |                 MACHINE_AUTH_NEEDED|            WANT_RUNNING_OFF|   WANT_RUNNING_OFF
       |                              v  |LOGIN_NEEDED        v   |WANT_RUNNING_ON      v
       +--START_STOPPED------------> NeedsMachineAuth ...   Stopped <-------------------+
       +--START_RUNNING----------------------------------> Starting

- Inputs come from two sides: the user (LocalAPI: want-running on/off, login, logout) and the
  engine (control said: login needed / machine auth needed / logged in; data plane is up; it failed).
- Every pair absent from _TRANSITIONS is invalid: `process` raises InvalidTransition and the state
  does not change (the backend logs and drops the input; a long-lived daemon has no "closed" end).
- Late engine events (a netmap arriving after the user stopped) are listed explicitly as self-loops,
  so "ignored on purpose" and "impossible" stay distinguishable.
- IN_USE_OTHER_USER exists for numbering compatibility only (Windows multi-user); nothing enters it.
"""

from __future__ import annotations

import enum

from engine.localapi.schema import State


class Input(enum.Enum):
    """Everything that can move the backend's state."""

    START_LOGGED_OUT = "start-logged-out"  # prefs loaded; no login (no node key or LoggedOut)
    START_STOPPED = "start-stopped"  # prefs loaded; logged in; WantRunning false
    START_RUNNING = "start-running"  # prefs loaded; logged in; WantRunning true
    WANT_RUNNING_ON = "want-running-on"  # user: up / prefs WantRunning=true
    WANT_RUNNING_OFF = "want-running-off"  # user: down / prefs WantRunning=false
    LOGIN_INTERACTIVE = "login-interactive"  # user asked for an auth URL
    LOGOUT = "logout"  # user logged out
    AUTH_URL = "auth-url"  # engine: control gave an AuthURL to visit
    LOGIN_NEEDED = "login-needed"  # engine: control needs (re)authentication (e.g. key expired)
    MACHINE_AUTH_NEEDED = "machine-auth-needed"  # engine: node registered, awaiting admin approval
    LOGGED_IN = "logged-in"  # engine: control accepted the node (authorized)
    ENGINE_UP = "engine-up"  # engine: netmap applied, data plane configured
    ENGINE_FAILED = "engine-failed"  # engine: could not start / crashed


class InvalidTransition(RuntimeError):
    """An input that the table does not allow in the current state."""

    def __init__(self, state: State, inp: Input) -> None:
        super().__init__(f"input {inp.value} is not valid in state {state.go_name}")
        self.state = state
        self.input = inp


S, In = State, Input

_TRANSITIONS: dict[tuple[State, Input], State] = {
    # startup
    (S.NO_STATE, In.START_LOGGED_OUT): S.NEEDS_LOGIN,
    (S.NO_STATE, In.START_STOPPED): S.STOPPED,
    (S.NO_STATE, In.START_RUNNING): S.STARTING,
    # NeedsLogin: waiting for the user / the browser
    (S.NEEDS_LOGIN, In.LOGIN_INTERACTIVE): S.NEEDS_LOGIN,
    (S.NEEDS_LOGIN, In.AUTH_URL): S.NEEDS_LOGIN,
    (S.NEEDS_LOGIN, In.WANT_RUNNING_ON): S.NEEDS_LOGIN,
    (S.NEEDS_LOGIN, In.WANT_RUNNING_OFF): S.NEEDS_LOGIN,
    (S.NEEDS_LOGIN, In.LOGOUT): S.NEEDS_LOGIN,
    (S.NEEDS_LOGIN, In.LOGIN_NEEDED): S.NEEDS_LOGIN,
    (S.NEEDS_LOGIN, In.LOGGED_IN): S.STARTING,
    (S.NEEDS_LOGIN, In.MACHINE_AUTH_NEEDED): S.NEEDS_MACHINE_AUTH,
    (S.NEEDS_LOGIN, In.ENGINE_FAILED): S.NEEDS_LOGIN,
    (S.NEEDS_LOGIN, In.ENGINE_UP): S.NEEDS_LOGIN,  # late event after logout
    # NeedsMachineAuth: registered, waiting for the admin
    (S.NEEDS_MACHINE_AUTH, In.LOGGED_IN): S.STARTING,
    (S.NEEDS_MACHINE_AUTH, In.MACHINE_AUTH_NEEDED): S.NEEDS_MACHINE_AUTH,
    (S.NEEDS_MACHINE_AUTH, In.WANT_RUNNING_ON): S.NEEDS_MACHINE_AUTH,
    (S.NEEDS_MACHINE_AUTH, In.WANT_RUNNING_OFF): S.STOPPED,
    (S.NEEDS_MACHINE_AUTH, In.LOGIN_INTERACTIVE): S.NEEDS_MACHINE_AUTH,
    (S.NEEDS_MACHINE_AUTH, In.AUTH_URL): S.NEEDS_LOGIN,
    (S.NEEDS_MACHINE_AUTH, In.LOGIN_NEEDED): S.NEEDS_LOGIN,
    (S.NEEDS_MACHINE_AUTH, In.LOGOUT): S.NEEDS_LOGIN,
    (S.NEEDS_MACHINE_AUTH, In.ENGINE_FAILED): S.STOPPED,
    # Stopped: logged in, user does not want the network up
    (S.STOPPED, In.WANT_RUNNING_ON): S.STARTING,
    (S.STOPPED, In.WANT_RUNNING_OFF): S.STOPPED,
    (S.STOPPED, In.LOGIN_INTERACTIVE): S.STOPPED,
    (S.STOPPED, In.AUTH_URL): S.NEEDS_LOGIN,
    (S.STOPPED, In.LOGIN_NEEDED): S.NEEDS_LOGIN,
    (S.STOPPED, In.LOGOUT): S.NEEDS_LOGIN,
    (S.STOPPED, In.LOGGED_IN): S.STOPPED,  # late event
    (S.STOPPED, In.ENGINE_UP): S.STOPPED,  # late event
    (S.STOPPED, In.ENGINE_FAILED): S.STOPPED,
    (S.STOPPED, In.MACHINE_AUTH_NEEDED): S.STOPPED,  # late event
    # Starting: control session and data plane coming up
    (S.STARTING, In.ENGINE_UP): S.RUNNING,
    (S.STARTING, In.LOGGED_IN): S.STARTING,
    (S.STARTING, In.WANT_RUNNING_ON): S.STARTING,
    (S.STARTING, In.WANT_RUNNING_OFF): S.STOPPED,
    (S.STARTING, In.LOGIN_INTERACTIVE): S.STARTING,
    (S.STARTING, In.AUTH_URL): S.NEEDS_LOGIN,
    (S.STARTING, In.LOGIN_NEEDED): S.NEEDS_LOGIN,
    (S.STARTING, In.MACHINE_AUTH_NEEDED): S.NEEDS_MACHINE_AUTH,
    (S.STARTING, In.LOGOUT): S.NEEDS_LOGIN,
    (S.STARTING, In.ENGINE_FAILED): S.STOPPED,
    # Running
    (S.RUNNING, In.ENGINE_UP): S.RUNNING,
    (S.RUNNING, In.LOGGED_IN): S.RUNNING,
    (S.RUNNING, In.WANT_RUNNING_ON): S.RUNNING,
    (S.RUNNING, In.WANT_RUNNING_OFF): S.STOPPED,
    (S.RUNNING, In.LOGIN_INTERACTIVE): S.RUNNING,
    (S.RUNNING, In.AUTH_URL): S.RUNNING,  # re-auth in progress; stays up until control says otherwise
    (S.RUNNING, In.LOGIN_NEEDED): S.NEEDS_LOGIN,
    (S.RUNNING, In.MACHINE_AUTH_NEEDED): S.NEEDS_MACHINE_AUTH,
    (S.RUNNING, In.LOGOUT): S.NEEDS_LOGIN,
    (S.RUNNING, In.ENGINE_FAILED): S.STOPPED,
}

# States in which the engine (control session + data plane) should be running.
ENGINE_WANTED = frozenset({S.STARTING, S.RUNNING, S.NEEDS_MACHINE_AUTH})


def transitions() -> dict[tuple[State, Input], State]:
    """A copy of the table (for tests and docs)."""
    return dict(_TRANSITIONS)


class StateMachine:
    """Holds the current State; `process(input)` moves it by the table or raises InvalidTransition."""

    def __init__(self, state: State = State.NO_STATE) -> None:
        self.state = state
        self.invalid_inputs = 0  # counted, for status/health

    def can(self, inp: Input) -> bool:
        return (self.state, inp) in _TRANSITIONS

    def process(self, inp: Input) -> State:
        nxt = _TRANSITIONS.get((self.state, inp))
        if nxt is None:
            self.invalid_inputs += 1
            raise InvalidTransition(self.state, inp)
        self.state = nxt
        return nxt
