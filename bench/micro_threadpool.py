"""
Micro benchmark: the cost of one hand-off to a thread and back on the
reactor, through Twisted's ThreadPool (deferToThreadPool, what the worker
uses for plain-function consumers) and through a minimal pool on
queue.SimpleQueue + reactor.callFromThread. 20,000 no-op calls, 10 in
flight, two rounds each; stops by itself (60 s at most).

Usage: python bench/micro_threadpool.py
"""

import queue
import threading
import time

from twisted.internet import defer, reactor, threads
from twisted.python.threadpool import ThreadPool

N = 20000
INFLIGHT = 10


def noop():
    return 1


def drive(submit, label):
    done = defer.Deferred()
    state = {"sent": 0, "got": 0}

    def one():
        state["sent"] += 1
        submit().addCallback(back)

    def back(_):
        state["got"] += 1
        if state["sent"] < N:
            one()
        elif state["got"] == N:
            done.callback(None)

    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(INFLIGHT):
        one()

    def report(_):
        print(f"{label}: {N / (time.perf_counter() - t0):,.0f} calls/s, "
              f"{1e6 * (time.process_time() - c0) / N:.1f} us CPU per call")

    return done.addCallback(report)


def twisted_pool():
    tp = ThreadPool(10, 10)
    tp.start()
    d = drive(lambda: threads.deferToThreadPool(reactor, tp, noop), "Twisted ThreadPool   ")
    return d.addBoth(lambda r: (tp.stop(), r)[1])


def simple_pool():
    q = queue.SimpleQueue()

    def worker():
        while True:
            item = q.get()
            if item is None:
                return
            f, d = item
            reactor.callFromThread(d.callback, f())

    workers = [threading.Thread(target=worker, daemon=True) for _ in range(10)]
    for t in workers:
        t.start()

    def submit():
        d = defer.Deferred()
        q.put((noop, d))
        return d

    def stop(r):
        for _ in workers:
            q.put(None)
        return r

    return drive(submit, "SimpleQueue pool     ").addBoth(stop)


@defer.inlineCallbacks
def main():
    try:
        for _ in range(2):
            yield twisted_pool()
            yield simple_pool()
    finally:
        reactor.stop()


if __name__ == "__main__":
    reactor.callLater(60, reactor.stop)
    reactor.callWhenRunning(main)
    reactor.run()
