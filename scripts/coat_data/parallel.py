"""An ordered map over worker processes that keeps a bounded number of chunks in flight (so a corpus
streams through memory), and the progress display.

Worker processes are spawned (not forked: the tokenizers library's thread pool does not survive a fork)
and each builds its state once with `setup(arg)`; `work(state, chunk)` then runs per chunk. With one worker
everything runs in this process. Results come back in input order, so the output does not depend on the
number of workers.
"""
import collections
import multiprocessing
import os
import sys
import time

_worker_state = {}  # per worker process: the state that setup() built (multiprocessing's usual pattern)


def _init_worker(setup, arg):
    _worker_state["state"] = setup(arg)


def _run(work, chunk):
    return work(_worker_state["state"], chunk)


def default_workers():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def ordered_map(setup, arg, work, chunks, workers, in_flight_per_worker=2):
    """Yields work(state, chunk) for each chunk in order; at most workers * in_flight_per_worker + 1 chunks
    are read ahead of the one being yielded. setup and work must be module-level functions."""
    if workers <= 1:
        state = setup(arg)
        for chunk in chunks:
            yield work(state, chunk)
        return
    # One thread per worker: the parallelism is the processes'.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_init_worker, initargs=(setup, arg)) as pool:
        pending = collections.deque()
        limit = workers * in_flight_per_worker
        for chunk in chunks:
            pending.append(pool.apply_async(_run, (work, chunk)))
            if len(pending) > limit:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


class Progress:
    """Input bytes done (of the total when known), documents and tokens: a tqdm bar when tqdm is installed and
    stderr is a terminal, else a line on stderr at most twice a second (every 10 s into a log). Silent with
    quiet=True."""

    def __init__(self, total_bytes, quiet=False, unit_name="docs"):
        self.total, self.quiet, self.unit_name = total_bytes, quiet, unit_name
        self.bytes = self.items = self.tokens = 0
        self.start = self._last_line = time.monotonic()
        self._bar = None
        self._tty = sys.stderr.isatty()
        if quiet or not self._tty:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self._bar = tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                         dynamic_ncols=True, smoothing=0.1)

    def update(self, nbytes, items, tokens):
        self.bytes += nbytes
        self.items += items
        self.tokens += tokens
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.update(nbytes)
            self._bar.set_postfix_str(f"{self.items} {self.unit_name}, {self.tokens} tokens", refresh=False)
            return
        now = time.monotonic()
        if now - self._last_line >= (0.5 if self._tty else 10):
            self._last_line = now
            self._print_line(now, end="\r" if self._tty else "\n")

    def _print_line(self, now, end):
        elapsed = max(now - self.start, 1e-9)
        done = f"{self.bytes / 2**20:.1f}" + (f"/{self.total / 2**20:.1f}" if self.total else "")
        print(f"  {done} MiB, {self.bytes / 2**20 / elapsed:.1f} MiB/s, {self.items} {self.unit_name}, "
              f"{self.tokens} tokens", end=end, file=sys.stderr, flush=True)

    def close(self):
        if self._bar is not None:
            self._bar.close()
        elif not self.quiet and self.bytes:
            self._print_line(time.monotonic(), end="\n")

    def seconds(self):
        return time.monotonic() - self.start
