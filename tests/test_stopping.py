import os
import signal

import pytest

from mosic.stopping import StopRequested, stop_signals


def test_sigterm_stops_a_job_where_it_is_as_ctrl_c_does_and_the_old_handlers_come_back():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(StopRequested) as e:
        with stop_signals() as stop:
            os.kill(os.getpid(), signal.SIGTERM)
            raise AssertionError("the signal did not stop the block")
    assert isinstance(e.value, KeyboardInterrupt) and e.value.signame == "SIGTERM"
    assert stop.requested and stop.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_flag_waits_for_the_loop_to_read_it_and_a_second_signal_does_not_wait():
    with stop_signals(at_once=False) as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested and stop.signame == "SIGINT" and stop.exit_code == 130
        with pytest.raises(StopRequested):
            os.kill(os.getpid(), signal.SIGINT)
            raise AssertionError("the second signal did not stop the block")
