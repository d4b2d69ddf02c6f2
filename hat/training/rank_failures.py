"""Ranks fail together: an exception on one rank of a distributed run ends every rank within seconds.

Otherwise the others would wait in their next collective until its timeout (two hours by default). The failing
rank writes its one-line message into the process group's store, which every rank watches from a thread.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any

#: Seconds between two looks at the store; a failing rank stays alive four times as long so the others read it.
POLL_SECONDS = 0.5

#: Store key of the first failure: a JSON object with the failing rank, its one-line message and whether it refused.
FIRST_FAILURE = 'hat/first_failure'


def one_line(error: BaseException, refused: bool) -> str:
    """The error as one line: its message's lines joined (a refusal lists its problems on several), and for an
    unexpected error its type."""
    text = ' '.join(line.strip() for line in str(error).splitlines() if line.strip())
    return text if refused else f'{type(error).__name__}: {text}' if text else type(error).__name__


class FellowRanks:
    """This rank's watch over the others: :meth:`fail` tells them this rank failed; a failure of another rank
    ends this process with that rank's message (exit status 2 for a refusal to start, else 1)."""

    def __init__(self, store: Any, rank: int, script: str) -> None:
        self.store, self.rank, self.script = store, rank, script
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name='hat-rank-watch', daemon=True)
        self._thread.start()

    @classmethod
    def of_process_group(cls, script: str) -> FellowRanks:
        """Watch the ranks of the default process group (``torch.distributed`` already started)."""
        import torch.distributed as dist

        return cls(dist.distributed_c10d._get_default_store(), dist.get_rank(), script)

    def _watch(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            try:
                failure = json.loads(self.store.get(FIRST_FAILURE)) if self.store.check([FIRST_FAILURE]) else None
            except Exception:  # the store is gone: its host ended, and this rank's own collectives will say so
                return
            if failure and failure['rank'] != self.rank:
                self._end(failure)

    def _end(self, failure: dict) -> None:
        how, what = ('refused to start',) * 2 if failure['refused'] else ('error', 'failed')
        print(f'{self.script}: {how}: rank {failure["rank"]} {what}: {failure["line"]}', file=sys.stderr, flush=True)
        os._exit(2 if failure['refused'] else 1)

    def fail(self, error: BaseException, refused: bool) -> None:
        """Tell the other ranks; if another rank failed first, end with its message instead of ours."""
        self.close()
        mine = dict(rank=self.rank, line=one_line(error, refused), refused=refused)
        try:
            first = json.loads(self.store.compare_set(FIRST_FAILURE, '', json.dumps(mine)))  # set unless set
        except Exception:
            return
        if first['rank'] != self.rank:
            self._end(first)
        print(f'[hat] rank {self.rank} {"refused to start" if refused else "failed"}: {mine["line"]}; stopping every '
              'rank', file=sys.stderr, flush=True)  # a launcher may end this process before its traceback
        time.sleep(4 * POLL_SECONDS)  # alive (and hosting the store, if rank 0) while the others read it

    def close(self) -> None:
        """Stop watching (the run ended on this rank)."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
