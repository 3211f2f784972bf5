from core.audio.timestamps import mmss, shift


def test_mmss():
    assert mmss(0) == "00:00"
    assert mmss(61.9) == "01:01"
    assert mmss(3723) == "1:02:03"


def test_shift_moves_chunk_times_into_the_recording():
    assert shift("door at 00:05, music 00:12-00:20", 60) == "door at 01:05, music 01:12-01:20"
    assert shift("at 0:59:50", 30) == "at 1:00:20"
    assert shift("no times here, 3 dogs", 90) == "no times here, 3 dogs"
    assert shift("at 00:05", 0) == "at 00:05"
