"""The incremental SSE parser: events must come out the same however the bytes are cut."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from switchboard.core.sse import DONE, SSEEvent, SSEParser, encode_data, encode_json, iter_events

STREAM = (
    b": keep-alive comment\n\n"
    b'data: {"id":"1","choices":[{"delta":{"content":"h\xc3\xa9"}}]}\n\n'
    b'event: message_start\ndata: {"type":"start"}\n\n'
    b"data: line one\ndata: line two\n\n"
    b"data:no-space\n\n"
    b"id: 7\nretry: 100\ndata: with ignored fields\n\n"
    b"data: [DONE]\n\n"
)
EXPECTED = [
    SSEEvent(None, b'{"id":"1","choices":[{"delta":{"content":"h\xc3\xa9"}}]}'),
    SSEEvent("message_start", b'{"type":"start"}'),
    SSEEvent(None, b"line one\nline two"),
    SSEEvent(None, b"no-space"),
    SSEEvent(None, b"with ignored fields"),
    SSEEvent(None, b"[DONE]"),
]


def feed_all(parser: SSEParser, parts: list[bytes]) -> list[SSEEvent]:
    return [event for part in parts for event in parser.feed(part)]


def test_whole_stream_in_one_feed() -> None:
    parser = SSEParser()
    assert parser.feed(STREAM) == EXPECTED
    assert parser.pending == b""


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_every_split_point_gives_the_same_events(newline: bytes) -> None:
    stream = STREAM.replace(b"\n", newline)
    for cut in range(len(stream) + 1):
        parser = SSEParser()
        events = feed_all(parser, [stream[:cut], stream[cut:]])
        if newline == b"\r":
            # a final lone CR might be half a CRLF: the last event waits for the next byte
            assert events == EXPECTED[:-1], cut
            events += parser.feed(b":")
        assert events == EXPECTED, (newline, cut)
        assert parser.pending in (b"", b":")


def test_every_pair_of_split_points_with_crlf() -> None:
    stream = b"data: a\r\n\r\nevent: e\r\ndata: b\r\ndata: c\r\n\r\n"
    expected = [SSEEvent(None, b"a"), SSEEvent("e", b"b\nc")]
    for i in range(len(stream) + 1):
        for j in range(i, len(stream) + 1):
            assert feed_all(SSEParser(), [stream[:i], stream[i:j], stream[j:]]) == expected, (i, j)


def test_byte_at_a_time() -> None:
    parser = SSEParser()
    assert feed_all(parser, [bytes([b]) for b in STREAM.replace(b"\n", b"\r\n")]) == EXPECTED


def test_crlf_split_between_feeds_is_one_line_break() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: x\r") == []
    assert parser.feed(b"\n\r") == []  # \r\n ends the line; the lone \r may start another CRLF
    assert parser.feed(b"\ndata: y\r\n\r\n") == [SSEEvent(None, b"x"), SSEEvent(None, b"y")]
    # had the CR-LF been read as two breaks, "data: x" would have ended at the first feed's CR+LF
    parser = SSEParser()
    assert parser.feed(b"data: x\r") == []
    assert parser.feed(b"\ndata: y\r\n\r\n") == [SSEEvent(None, b"x\ny")]


def test_comments_and_blank_blocks_yield_nothing() -> None:
    parser = SSEParser()
    assert parser.feed(b": ping\n\n:\n\n\n\n") == []
    assert parser.feed(b": only a comment\ndata: d\n: trailing comment\n\n") == [SSEEvent(None, b"d")]


def test_event_name_without_data_is_an_event() -> None:
    assert SSEParser().feed(b"event: ping\n\n") == [SSEEvent("ping", b"")]


def test_empty_data_line_is_kept() -> None:
    assert SSEParser().feed(b"data:\n\n") == [SSEEvent(None, b"")]
    assert SSEParser().feed(b"data: a\ndata:\ndata: b\n\n") == [SSEEvent(None, b"a\n\nb")]


def test_only_one_leading_space_is_stripped() -> None:
    assert SSEParser().feed(b"data:   indented\n\n") == [SSEEvent(None, b"  indented")]


def test_trailing_partial_event_stays_pending() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: done\n\ndata: half") == [SSEEvent(None, b"done")]
    assert parser.pending == b"data: half"
    assert parser.feed(b"-way\n") == []
    assert parser.feed(b"\n") == [SSEEvent(None, b"half-way")]


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_iter_events_yields_across_chunks() -> None:
    events = [
        e async for e in iter_events(_chunks(b"data: a\n", b"\ndata: b\r", b"\n\r\n", b"data: [DONE]\n\n"))
    ]
    assert events == [SSEEvent(None, b"a"), SSEEvent(None, b"b"), SSEEvent(None, b"[DONE]")]


@pytest.mark.parametrize("tail", [b"data: last", b"data: last\n", b"data: last\r\n", b"data: last\r"])
async def test_iter_events_flushes_a_trailing_event_without_its_blank_line(tail: bytes) -> None:
    events = [e async for e in iter_events(_chunks(b"data: first\n\n", tail))]
    assert events == [SSEEvent(None, b"first"), SSEEvent(None, b"last")]


async def test_iter_events_ignores_trailing_whitespace() -> None:
    events = [e async for e in iter_events(_chunks(b"data: only\n\n", b"\n"))]
    assert events == [SSEEvent(None, b"only")]


async def test_iter_events_yields_each_event_as_soon_as_it_completes() -> None:
    seen: list[str] = []

    async def source() -> AsyncIterator[bytes]:
        seen.append("sent-1")
        yield b"data: 1\n\n"
        seen.append("sent-2")
        yield b"data: 2\n\n"

    async for event in iter_events(source()):
        seen.append(event.data.decode())
    assert seen == ["sent-1", "1", "sent-2", "2"]


def test_encoders() -> None:
    assert encode_data(b'{"a":1}') == b'data: {"a":1}\n\n'
    assert encode_json({"a": [1, "é"]}) == b'data: {"a":[1,"\\u00e9"]}\n\n'
    assert DONE == b"data: [DONE]\n\n"
    assert SSEParser().feed(encode_json({"x": 1}) + DONE) == [
        SSEEvent(None, b'{"x":1}'),
        SSEEvent(None, b"[DONE]"),
    ]
