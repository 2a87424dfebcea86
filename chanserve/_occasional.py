"""Warnings that would repeat per message or per request, logged occasionally."""


class OccasionalWarnings:
    """
    Log a warning of one kind at most once every ``interval`` seconds of
    ``clock``; the next one of that kind says how many were left out.

    For what repeats under load (a member full on every group message, a
    503 per request while the layer is down): the counters in
    ``statistics()`` keep the totals, the log keeps one line per while.
    """

    def __init__(self, log, clock, interval=10.0):
        self._log = log
        self._clock = clock
        self.interval = interval
        self._last = {}  # kind -> (seconds of the last line, lines left out since)

    def warn(self, kind, format, **kwargs):
        """Log ``format`` (a ``twisted.logger`` format) unless ``kind`` was logged lately."""
        now = self._clock.seconds()
        last, skipped = self._last.get(kind, (None, 0))
        if last is not None and now - last < self.interval:
            self._last[kind] = (last, skipped + 1)
            return
        if len(self._last) > 1000:
            self._last.clear()
        self._last[kind] = (now, 0)
        if skipped:
            format += " ({skipped} more like it in the last {interval:.0f} s)"
            kwargs.update(skipped=skipped, interval=now - last)
        self._log.warn(format, **kwargs)
