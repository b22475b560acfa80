"""A handler's three forms of answer (http/message.py): a Response now, a `Later` (a future and
what to make of it, no task), or a coroutine; each written in order, over real sockets, and a
`Later` whose client leaves is tidied up. And the deadlines' slots (batching/deadlines.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tests.helpers.rawhttp import read_answer

from embedding_proxy.batching.deadlines import SLOT, Deadlines
from embedding_proxy.http.message import Answer, Later, Limits, Request, Response, settle, then
from embedding_proxy.http.server import Server


class Forms:
    """/now answers at once, /later through a Later settled by the test, /task as a coroutine."""

    def __init__(self) -> None:
        self.futures: list[asyncio.Future[bytes]] = []
        self.finished: list[str] = []  # how each Later ended: "done" or "cancelled"

    def __call__(self, request: Request) -> Answer:
        if request.path == "/now":
            return Response(200, b"now " + request.body, "text/plain")
        if request.path == "/later":
            future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            self.futures.append(future)
            return Later(future, self.finish)
        return self.task(request)

    def finish(self, future: asyncio.Future[Any]) -> Response:
        if future.cancelled():
            self.finished.append("cancelled")
            raise asyncio.CancelledError
        self.finished.append("done")
        return Response(200, b"later " + future.result(), "text/plain")

    async def task(self, request: Request) -> Response:
        await asyncio.sleep(0.01)
        return Response(200, b"task", "text/plain")


@pytest.fixture
async def served() -> AsyncIterator[tuple[Server, Forms]]:
    forms = Forms()
    server = Server(forms, Limits(max_body_bytes=1000))
    await server.start("127.0.0.1", 0)
    yield server, forms
    await server.close(timeout=1)


def post(path: str, body: bytes = b"") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


async def poll(check: Any, what: str) -> None:
    for _ in range(100):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(what)


async def test_every_form_is_answered_in_the_order_asked(served: tuple[Server, Forms]) -> None:
    server, forms = served
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(post("/later", b"a") + post("/now", b"b") + post("/task") + post("/later"))
    await poll(lambda: len(forms.futures) == 1, "the first Later was not asked for")
    await asyncio.sleep(0.05)
    assert server.body_held == 2  # "a", held by the Later waiting, and "b" read behind it
    forms.futures[0].set_result(b"one")
    assert (await read_answer(reader, 5))[2] == b"later one"
    assert (await read_answer(reader, 5))[2] == b"now b"
    assert (await read_answer(reader, 5))[2] == b"task"
    await poll(lambda: len(forms.futures) == 2, "the second Later was not asked for")
    forms.futures[1].set_result(b"two")
    assert (await read_answer(reader, 5))[2] == b"later two"
    assert forms.finished == ["done", "done"]
    assert server.body_held == 0
    writer.close()


async def test_a_later_whose_client_leaves_is_cancelled_and_tidied(
    served: tuple[Server, Forms],
) -> None:
    server, forms = served
    _, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(post("/later", b"x" * 100))
    await poll(lambda: forms.futures, "the Later was not asked for")
    assert server.body_held == 100
    writer.close()
    await poll(lambda: forms.finished == ["cancelled"], "finish was not told the client left")
    assert forms.futures[0].cancelled()
    assert server.body_held == 0  # the body went back with it
    assert not server.connections


async def test_then_and_settle_treat_every_form_alike() -> None:
    loop = asyncio.get_running_loop()

    def tag(response: Response) -> Response:
        response.lines += b"X-Tag: 1\r\n"
        return response

    now = then(Response(200, b"a"), tag)
    assert isinstance(now, Response) and now.lines == b"X-Tag: 1\r\n"

    future: asyncio.Future[bytes] = loop.create_future()
    later = then(Later(future, lambda f: Response(200, f.result())), tag)
    loop.call_soon(future.set_result, b"b")
    response = await settle(later)
    assert (response.body, response.lines) == (b"b", b"X-Tag: 1\r\n")

    async def coroutine() -> Response:
        return Response(200, b"c")

    response = await settle(then(coroutine(), tag))
    assert (response.body, response.lines) == (b"c", b"X-Tag: 1\r\n")


async def test_settle_cancelled_cancels_the_later_and_lets_it_tidy_up() -> None:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[bytes] = loop.create_future()
    ended: list[bool] = []

    def finish(f: asyncio.Future[Any]) -> Response:
        ended.append(f.cancelled())
        if f.cancelled():
            raise asyncio.CancelledError
        return Response(200, f.result())

    waiter = asyncio.ensure_future(settle(Later(future, finish)))
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert future.cancelled() and ended == [True]


async def test_deadlines_expire_in_their_slot_never_early_and_not_once_removed() -> None:
    loop = asyncio.get_running_loop()
    expired: dict[str, float] = {}
    deadlines: Deadlines[str] = Deadlines(lambda item: expired.setdefault(item, loop.time()))
    now = loop.time()
    due = {"a": now + 0.02, "b": now + 0.021, "c": now + 0.05, "gone": now + 0.03}
    slots = {item: deadlines.add(at, item) for item, at in due.items()}
    assert slots["a"] == slots["b"] or slots["b"] == slots["a"] + 1  # 1 ms apart: one slot or two
    assert len(deadlines) == 4
    deadlines.remove(slots["gone"], "gone")
    assert len(deadlines) == 3
    await asyncio.sleep(0.12)
    assert set(expired) == {"a", "b", "c"}
    for item, at in expired.items():
        assert at >= due[item] - 0.002  # the loop's clock resolution, not a slot early
        assert at <= due[item] + SLOT + 0.05  # a slot late at most, and a busy test machine
    assert len(deadlines) == 0
