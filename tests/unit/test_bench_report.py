"""The peer benchmark's pure parts (scripts/bench): which condition of a row counts (the worst), the
tables, the chart, the counting relay and the CPU-time parsing. No FUSE, no backend; fast."""
from __future__ import annotations

import socket
import sys
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from bench import report  # noqa: E402
from bench.chart import write_chart  # noqa: E402
from bench.others import TICKS, parse_stat_cpu  # noqa: E402
from bench.relay import Relay  # noqa: E402
from bench.report import Results, Row, render, worst_condition  # noqa: E402

COLUMNS = ("raw", "storefs-mfusepy", "rclone", "s3fs")
SF = "storefs-mfusepy"


def results_with(row: Row, table: dict[str, dict[str, list[float]]]) -> Results:
    """table: condition -> column -> values."""
    results = Results([row])
    for condition, cells in table.items():
        for column, values in cells.items():
            for value in values:
                results.add(row.key, condition, column, value)
    return results


CREATE = Row("create", "create files (files/s)", True, 1, ("bash", "python"))
LS = Row("ls", "ls -l (s)", False, 2, ("alone", "busy"))


def test_the_worst_condition_is_where_storefs_is_furthest_behind_the_best_peer():
    # storefs's own value is lower in "python", but against the best peer it is furthest behind in "bash".
    results = results_with(CREATE, {"bash": {SF: [150], "rclone": [500], "s3fs": [100]},
                                    "python": {SF: [120], "rclone": [130], "s3fs": [90]}})
    assert worst_condition(results, CREATE, SF, COLUMNS) == "bash"


def test_lower_is_better_rows_take_the_peer_with_the_least_time():
    results = results_with(LS, {"alone": {SF: [2.0], "rclone": [1.0], "s3fs": [4.0]},   # 0.5x the best
                                "busy": {SF: [3.0], "rclone": [2.0], "s3fs": [9.0]}})   # 0.67x the best
    assert worst_condition(results, LS, SF, COLUMNS) == "alone"


def test_without_peers_the_worst_is_storefs_own_worst_value_and_without_values_the_first():
    results = results_with(CREATE, {"bash": {SF: [150]}, "python": {SF: [120]}})
    assert worst_condition(results, CREATE, SF, COLUMNS) == "python"
    results = results_with(LS, {"alone": {SF: [2.0]}, "busy": {SF: [3.0]}})
    assert worst_condition(results, LS, SF, COLUMNS) == "busy"
    assert worst_condition(Results([LS]), LS, SF, COLUMNS) == "alone"


def test_a_condition_where_storefs_failed_is_not_hidden_behind_one_it_measured():
    results = results_with(CREATE, {"bash": {"rclone": [500]}, "python": {SF: [120], "rclone": [130]}})
    results.fail("create", "bash", SF, "TimeoutError: too slow")
    # only "python" has a ratio: it is shown, and the failure is in the full table with its note
    assert worst_condition(results, CREATE, SF, COLUMNS) == "python"
    text = render(results, ["# t"], [], COLUMNS, storefs=SF)
    assert "| create files (files/s) — bash | n/a [1] | fail [3] | 500.0 | n/a [2] | — | — |" in text
    assert "[1] raw: not measured" in text
    assert "[3] storefs-mfusepy: TimeoutError: too slow" in text


def test_the_summary_line_shows_one_condition_side_by_side_and_the_full_table_every_condition():
    results = results_with(CREATE, {"bash": {"raw": [1000], SF: [150, 170, 160], "rclone": [500, 480, 520],
                                             "s3fs": [100]},
                                    "python": {"raw": [1000], SF: [300], "rclone": [250], "s3fs": [90]}})
    text = render(results, ["## title", "date · machine"], ["a setting"], COLUMNS, storefs=SF, chart="x.svg")
    lines = text.splitlines()
    summary = lines.index("### Summary: each row in its worst condition")
    full = lines.index("### Every condition")
    assert lines[:2] == ["## title", "date · machine"]
    # summary: medians of the worst condition, ratios vs the best peer (500) and raw (1000) of that condition
    assert "| create files (files/s) — worst: bash | 1,000.0 | 160.0 | 500.0 | 100.0 | 0.32× | 0.16× |" \
        in lines[summary:full]
    assert "![each row in its worst condition](x.svg)" in lines[summary:full]
    body = lines[full:]
    assert "| create files (files/s) — bash | 1,000.0 | 160.0 (150.0–170.0) | 500.0 (480.0–520.0) | 100.0 | " \
           "0.32× | 0.16× |" in body
    assert "| create files (files/s) — python | 1,000.0 | 300.0 | 250.0 | 90.0 | 1.20× | 0.30× |" in body
    assert "- a setting" in lines


def test_a_spread_row_shows_min_and_max_in_the_summary_too():
    row = Row("read_cold", "cold read (MiB/s)", True, 1, ("alone",), spread=True)
    results = results_with(row, {"alone": {SF: [506, 225, 221], "s3fs": [264, 445]}})
    text = render(results, [], [], COLUMNS, storefs=SF)
    assert "| cold read (MiB/s) — worst: alone | n/a [1] | 225.0 (221.0–506.0) | n/a [2] | 354.5 (264.0–445.0) | " \
           "0.63× | — |" in text


def test_the_bindings_ratio_and_not_applicable_cells():
    columns = ("raw", SF, "storefs-fusepy")
    results = results_with(LS, {"alone": {SF: [2.0], "storefs-fusepy": [4.0]}})
    results.na_all("ls", "raw", "no mount process")
    text = render(results, [], [], columns, storefs=SF, versus=(SF, "storefs-fusepy"))
    assert "| ls -l (s) — alone | n/a [1] | 2.00 | 4.00 | — | — | 2.00× |" in text
    assert "[1] raw: no mount process" in text


def test_partial_failures_keep_the_value_and_say_how_many_runs_failed():
    results = results_with(CREATE, {"bash": {SF: [150]}})
    results.fail("create", "bash", SF, "OSError: EIO")
    text = render(results, [], [], COLUMNS, storefs=SF)
    assert "150.0 [" in text
    assert "storefs-mfusepy, create files (files/s) (bash): 1 of 2 runs failed: OSError: EIO" in text


def test_fail_all_fills_only_the_conditions_without_a_value():
    results = results_with(CREATE, {"bash": {SF: [150]}})
    results.fail_all("create", SF, "mount: RuntimeError")
    assert results.cell("create", "bash", SF).errors == []
    assert results.cell("create", "python", SF).errors == ["mount: RuntimeError"]


def test_ratio_and_value_formatting():
    assert report.format_ratio(report.ratio(100, 50, True)) == "2.00×"
    assert report.format_ratio(report.ratio(2.0, 1.0, False)) == "0.50×"
    assert report.format_ratio(report.ratio(1, 30, True)) == "0.03×"
    assert report.format_ratio(report.ratio(None, 1, True)) == "—"
    assert report.format_ratio(report.ratio(0, 1, True)) == "—"
    assert report.format_values([3.0, 1.0, 2.0], 1, spread=True) == "2.0 (1.0–3.0)"
    assert report.format_values([3.0], 1, spread=True) == "3.0"
    assert report.format_values([1000.0, 3000.0], 0, spread=False) == "2,000"


def test_the_chart_is_an_svg_with_each_row_in_its_worst_condition(tmp_path):
    results = results_with(CREATE, {"bash": {"raw": [1000], SF: [150], "rclone": [500], "s3fs": [100]},
                                    "python": {"raw": [1000], SF: [300], "rclone": [250], "s3fs": [90]}})
    ls = results_with(LS, {"alone": {SF: [2.0], "rclone": [1.0]}, "busy": {SF: [3.0], "rclone": [2.9]}})
    results.rows.append(LS)
    results.cells.update(ls.cells)
    results.fail("ls", "alone", "s3fs", "mount failed")
    path = write_chart(tmp_path / "out" / "bench.svg", results, COLUMNS, SF, "title 2026-12-07 · 2 cores")
    root = ET.parse(path).getroot()
    assert root.tag.endswith("svg")
    text = " ".join("".join(el.itertext()) for el in root.iter() if el.tag.endswith("text"))
    assert "worst: bash (higher is better)" in text
    assert "worst: alone (lower is better)" in text
    assert "title 2026-12-07 · 2 cores" in text
    for column in COLUMNS:
        assert column in text
    # the same results give the same file (stable ids): a chart in the repository only changes with them
    again = write_chart(tmp_path / "again.svg", results, COLUMNS, SF, "title 2026-12-07 · 2 cores")
    assert again.read_bytes() == path.read_bytes()


def _server(answer: bytes) -> tuple[socket.socket, threading.Thread, list[bytes]]:
    """A one-connection server on 127.0.0.1: reads the request until the client half-closes, answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    got: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            chunks = []
            while data := conn.recv(65536):
                chunks.append(data)
            got.append(b"".join(chunks))
            conn.sendall(answer)
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread, got


def _exchange(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(request)
        client.shutdown(socket.SHUT_WR)
        chunks = []
        while data := client.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


def test_the_relay_forwards_both_ways_and_counts_exact_bytes():
    answer = bytes(range(256)) * 4099           # ~1 MiB, not a multiple of the relay's buffer
    request = b"GET /b/k HTTP/1.1\r\n" * 1000
    listener, thread, got = _server(answer)
    try:
        with Relay(listener.getsockname()) as relay:
            assert relay.counts() == (0, 0)
            assert relay.endpoint == f"http://127.0.0.1:{relay.port}"
            assert _exchange(relay.port, request) == answer
            thread.join(timeout=10)
            assert got == [request]
            assert relay.counts() == (len(answer), len(request))
    finally:
        listener.close()


def test_the_relay_sums_connections_and_closes_everything():
    listeners = []
    try:
        threads_before = threading.active_count()
        with Relay(("127.0.0.1", 1)) as relay:   # upstream replaced below, per connection
            total = 0
            for size in (10, 70_000, 3):
                listener, thread, _ = _server(b"x" * size)
                listeners.append(listener)
                relay.upstream = listener.getsockname()
                assert _exchange(relay.port, b"q") == b"x" * size
                thread.join(timeout=10)
                total += size
            assert relay.counts() == (total, 3)
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", relay.port), timeout=2).close()
        assert threading.active_count() <= threads_before
    finally:
        for listener in listeners:
            listener.close()


def test_cpu_seconds_come_from_utime_and_stime_whatever_the_command_name():
    fields = ["S"] + ["0"] * 10 + [str(3 * TICKS), str(2 * TICKS)] + ["0"] * 30
    stat = "4242 (storefs (b) x) " + " ".join(fields)
    assert parse_stat_cpu(stat) == pytest.approx(5.0)


def test_rows_and_mounts_can_be_picked_and_every_small_file_condition_is_measured():
    import bench_peers as bp
    args = bp.parse_args(["--rows", "small-files,random-reads", "--mounts", "storefs,rclone"])
    assert args.rows == ["small-files", "random-reads"]
    assert args.mounts == [*bp.STOREFS_KINDS, "rclone"]
    with pytest.raises(SystemExit):
        bp.parse_args(["--rows", "small-files,everything"])
    settings = bp.settings_of(args)
    rows = bp.rows_for(settings)
    # bash and Python loops x another client listing or not x write-back 0 or default
    assert len(set(rows["small-files"][0].conditions)) == 8
    assert rows["random-reads"][0].conditions == ("fio 8 s", "fio 15 s")
    quick = bp.settings_of(bp.parse_args(["--quick"]))
    assert (quick.runs, quick.fio_short, quick.fio_long) == (1, 3.0, 6.0)
