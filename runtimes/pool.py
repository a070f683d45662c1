"""A thread-safe pool of per-caller native objects (interpreters, infer requests, execution contexts).

Backends whose native handles must not be shared between threads take one per call and give it
back; the pool grows to the number of concurrent callers (optionally capped) and reuses them. A
handle whose use raised is dropped rather than reused.

Example::

    pool = Pool(lambda: Interpreter(path))
    with pool.take() as it:
        it.invoke()
"""
from __future__ import annotations

import contextlib
import threading
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Pool(Generic[T]):
    """Hands each caller its own item; ``max_size`` caps how many exist (callers then wait)."""

    def __init__(self, factory: Callable[[], T], max_size: int | None = None) -> None:
        self._factory = factory
        self._free: list[T] = []
        self._created = 0
        self._max = max_size
        self._cond = threading.Condition()

    @property
    def created(self) -> int:
        return self._created

    def put(self, item: T) -> None:
        """Add an item made elsewhere (e.g. the one built while loading)."""
        with self._cond:
            self._free.append(item)
            self._created += 1
            self._cond.notify()

    @contextlib.contextmanager
    def take(self) -> Iterator[T]:
        with self._cond:
            while not self._free and self._max is not None and self._created >= self._max:
                self._cond.wait()
            item = self._free.pop() if self._free else None
            if item is None:
                self._created += 1
        if item is None:
            try:
                item = self._factory()
            except BaseException:
                with self._cond:
                    self._created -= 1
                    self._cond.notify()
                raise
        try:
            yield item
        except BaseException:
            # a native handle that raised may be left in a bad state (OpenVINO infer requests are): drop it,
            # the next caller gets a fresh one
            with self._cond:
                self._created -= 1
                self._cond.notify()
            raise
        with self._cond:
            self._free.append(item)
            self._cond.notify()

    def clear(self) -> list[T]:
        """Forget every item (the caller frees them); returns the free ones."""
        with self._cond:
            items, self._free, self._created = self._free, [], 0
            return items
