"""A fetch thread whose room is smaller than its lane's streams reads them in rotating
windows (engine.worker.windows): every stream in turn, each read blocking a share."""

from engine.worker.windows import WINDOW_BLOCK_MIN_MS, Windows


def test_windows_rotate_over_every_stream_and_share_the_block():
    # Given five streams and room for two messages
    windows = Windows(["a", "b", "c", "d", "e"], 500)
    # Then three reads cover every stream, each ">" (new entries), wrapping round
    reads = [windows.next(2) for _ in range(3)]
    assert [list(read) for read in reads] == [["a", "b"], ["c", "d"], ["e", "a"]]
    assert all(set(read.values()) == {">"} for read in reads)
    # and a window of two of five blocks two fifths of the sweep
    assert windows.block_ms == 200


def test_a_window_blocks_at_least_the_minimum_and_never_reads_nothing():
    windows = Windows([f"s{i}" for i in range(100)], 500)
    assert list(windows.next(0)) == ["s0"]       # no room: still one stream, COUNT 1
    assert windows.block_ms == WINDOW_BLOCK_MIN_MS
