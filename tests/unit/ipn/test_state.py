"""IPN state machine: the transition table, checked over every (state, input) pair."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from engine.ipn.state import ENGINE_WANTED, Input, InvalidTransition, StateMachine, transitions
from engine.localapi.schema import State

TABLE = transitions()


@given(state=st.sampled_from(State), inp=st.sampled_from(Input))
def test_every_pair_transitions_or_raises_without_moving(state, inp):
    sm = StateMachine(state)
    if (state, inp) in TABLE:
        assert sm.process(inp) == TABLE[(state, inp)]
        assert sm.state in State
    else:
        with pytest.raises(InvalidTransition) as ei:
            sm.process(inp)
        assert sm.state == state
        assert sm.invalid_inputs == 1
        assert ei.value.state == state and ei.value.input == inp
        assert inp.value in str(ei.value) and state.go_name in str(ei.value)


@given(inputs=st.lists(st.sampled_from(Input), max_size=40))
def test_random_walks_stay_in_reachable_states(inputs):
    sm = StateMachine()
    for inp in inputs:
        try:
            sm.process(inp)
        except InvalidTransition:
            pass
    # InUseOtherUser is never entered; NoState is never re-entered once left
    assert sm.state != State.IN_USE_OTHER_USER
    if sm.state == State.NO_STATE:
        assert all(i not in (Input.START_LOGGED_OUT, Input.START_STOPPED, Input.START_RUNNING) for i in inputs)


def test_no_state_only_accepts_start_inputs():
    allowed = {i for (s, i) in TABLE if s == State.NO_STATE}
    assert allowed == {Input.START_LOGGED_OUT, Input.START_STOPPED, Input.START_RUNNING}


def test_nothing_enters_no_state_or_in_use_other_user():
    assert State.NO_STATE not in TABLE.values()
    assert State.IN_USE_OTHER_USER not in TABLE.values()


@pytest.mark.parametrize(
    "path,want",
    [
        pytest.param(
            [Input.START_LOGGED_OUT, Input.LOGIN_INTERACTIVE, Input.AUTH_URL, Input.LOGGED_IN, Input.ENGINE_UP],
            State.RUNNING,
            id="interactive-login",
        ),
        pytest.param([Input.START_RUNNING, Input.ENGINE_UP, Input.WANT_RUNNING_OFF], State.STOPPED, id="down"),
        pytest.param([Input.START_STOPPED, Input.WANT_RUNNING_ON, Input.ENGINE_UP], State.RUNNING, id="up"),
        pytest.param([Input.START_RUNNING, Input.ENGINE_UP, Input.LOGOUT], State.NEEDS_LOGIN, id="logout"),
        pytest.param(
            [Input.START_LOGGED_OUT, Input.MACHINE_AUTH_NEEDED, Input.LOGGED_IN, Input.ENGINE_UP],
            State.RUNNING,
            id="machine-approval",
        ),
        pytest.param([Input.START_RUNNING, Input.ENGINE_UP, Input.LOGIN_NEEDED], State.NEEDS_LOGIN, id="key-expired"),
        pytest.param([Input.START_RUNNING, Input.ENGINE_FAILED], State.STOPPED, id="engine-failed"),
        pytest.param([Input.START_STOPPED, Input.ENGINE_UP], State.STOPPED, id="late-netmap-ignored"),
    ],
)
def test_paths(path, want):
    sm = StateMachine()
    for inp in path:
        sm.process(inp)
    assert sm.state == want


def test_every_non_initial_state_can_log_out_and_stop():
    for s in (State.NEEDS_LOGIN, State.NEEDS_MACHINE_AUTH, State.STOPPED, State.STARTING, State.RUNNING):
        assert (s, Input.LOGOUT) in TABLE and TABLE[(s, Input.LOGOUT)] == State.NEEDS_LOGIN
        assert (s, Input.WANT_RUNNING_OFF) in TABLE
        assert TABLE[(s, Input.WANT_RUNNING_OFF)] in (State.STOPPED, State.NEEDS_LOGIN)


def test_engine_wanted_states():
    assert ENGINE_WANTED == {State.STARTING, State.RUNNING, State.NEEDS_MACHINE_AUTH}
