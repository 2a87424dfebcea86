"""Warnings that would repeat per message or per request, logged occasionally."""


class OccasionalWarnings:
    """
    Log a warning of one kind at most once every ``interval`` seconds of
    ``clock``; those left out are summarised in one line when the interval
    ends (the latest of them, with how many more there were).

    For what repeats under load (a member full on every group message, a
    503 per request while the layer is down): the counters in
    ``statistics()`` keep the totals, the log keeps one line per while.
    Call ``flush`` when the owner stops: it logs what is pending at once.
    """

    def __init__(self, log, clock, interval=10.0):
        self._log = log
        self._clock = clock
        self.interval = interval
        # kind -> [seconds of the last line, lines left out since, latest left out, summary call]
        self._kinds = {}

    def warn(self, kind, format, **kwargs):
        """Log ``format`` (a ``twisted.logger`` format) unless ``kind`` was logged lately."""
        now = self._clock.seconds()
        state = self._kinds.get(kind)
        if state is not None and now - state[0] < self.interval:
            state[1] += 1
            state[2] = (format, kwargs)
            if state[3] is None:
                state[3] = self._clock.callLater(state[0] + self.interval - now,
                                                 self._summarise, kind)
            return
        if state is not None and state[1]:
            self._summarise(kind)
        if len(self._kinds) > 1000:
            self.flush()
            self._kinds.clear()
        self._kinds[kind] = [now, 0, None, None]
        self._log.warn(format, **kwargs)

    def _summarise(self, kind):
        state = self._kinds[kind]
        now = self._clock.seconds()
        skipped, (format, kwargs) = state[1], state[2]
        if state[3] is not None and state[3].active():
            state[3].cancel()
        self._kinds[kind] = [now, 0, None, None]
        if skipped > 1:
            format += " (and {others} more like it in the last {seconds:.0f} s)"
            kwargs = dict(kwargs, others=skipped - 1, seconds=now - state[0])
        self._log.warn(format, **kwargs)

    def flush(self):
        """Log every pending summary now and cancel its timer."""
        for kind, state in list(self._kinds.items()):
            if state[1]:
                self._summarise(kind)
