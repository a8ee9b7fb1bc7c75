"""Control client pure parts: login state table (Hypothesis over all pairs), backoff bounds."""

from hypothesis import given, strategies as st

from engine.control.client import Input, State, backoff_delay, next_state


@given(st.sampled_from(State), st.sampled_from(Input))
def test_every_state_input_pair_is_defined(state, inp):
    assert isinstance(next_state(state, inp), State)


def test_key_paths():
    s = next_state(State.NEW, Input.START)
    assert s is State.LOGGING_IN
    s = next_state(s, Input.AUTH_URL)
    assert s is State.WAIT_AUTH_URL
    s = next_state(s, Input.AUTHORIZED)
    assert s is State.AUTHENTICATED
    s = next_state(s, Input.MAP)
    assert s is State.SYNCED
    assert next_state(s, Input.KEY_EXPIRED) is State.NEEDS_LOGIN
    assert next_state(s, Input.LOGOUT) is State.LOGGED_OUT
    assert next_state(State.LOGGED_OUT, Input.MAP) is State.LOGGED_OUT  # no map after logout
    assert next_state(State.LOGGED_OUT, Input.LOGIN) is State.LOGGING_IN


@given(st.integers(0, 100), st.floats(0, 1))
def test_backoff_bounds(attempt, r):
    d = backoff_delay(attempt, base=0.5, cap=30.0, rng=lambda: r)
    full = min(30.0, 0.5 * 2**attempt)
    assert full / 2 - 1e-9 <= d <= full + 1e-9 <= 30.0 + 1e-9
