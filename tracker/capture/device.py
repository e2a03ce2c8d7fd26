"""CUDA plumbing for the stats worker: a side stream per device, pinned host copies.

On the GPU the worker must neither wait for the whole device (torch.cuda.synchronize would stall
training) nor read tensors before the training stream has written them. The training thread
records an event on its current stream when a step closes; the worker's own stream waits for that
event, runs the reductions, and copies results to pinned host memory without blocking training.
The worker keeps its references until its stream has finished, so the caching allocator cannot
hand that memory to another tensor early. Nothing here runs for CPU tensors.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
from torch import Tensor


def ready_events(tensors: Iterable[Tensor]) -> dict[torch.device, torch.cuda.Event]:
    """On the training thread: an event on each CUDA device's current stream, marking the step."""
    events: dict[torch.device, torch.cuda.Event] = {}
    if not torch.cuda.is_initialized():  # no tensor can be on a GPU: skip the per-tensor checks
        return events
    for t in tensors:
        if t.is_cuda and t.device not in events:
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(t.device))
            events[t.device] = event
    return events


class SideStreams:
    """One stream per CUDA device, owned by the worker thread."""

    def __init__(self) -> None:
        self._streams: dict[torch.device, torch.cuda.Stream] = {}

    @contextlib.contextmanager
    def after(self, events: dict[torch.device, torch.cuda.Event]) -> Iterator[None]:
        """Make the worker's streams current, each ordered after the training stream's event."""
        if not events:
            yield
            return
        with contextlib.ExitStack() as stack:
            for device, event in events.items():
                stream = self._streams.get(device)
                if stream is None:
                    stream = self._streams[device] = torch.cuda.Stream(device)
                stream.wait_event(event)
                stack.enter_context(torch.cuda.stream(stream))
            yield


def to_host(x: Tensor) -> Tensor:
    """Start copying ``x`` to host memory; for CUDA, into pinned memory without blocking.

    The copy is complete once the current stream has been synchronised (the worker's next blocking
    transfer, StatsBatch.resolve(), does that), so read the result only after it.
    """
    if not x.is_cuda:
        return x.cpu()
    host = torch.empty(x.shape, dtype=x.dtype, pin_memory=True)
    host.copy_(x, non_blocking=True)
    return host
