"""The interface every channel layer provides."""

from zope.interface import Attribute, Interface


class IChannelLayer(Interface):
    """
    A channel layer: named FIFO channels with capacities and expiry, and groups.

    Every method that talks to the layer returns a ``Deferred`` and must be
    called on the reactor thread (``chanserve.Channel`` / ``Group`` take care
    of threads). Messages are dicts as described by ``validate_content``.

    Channel names containing ``!`` are process-specific: a message sent to
    ``"abc!xyz"`` is received by ``receive(["abc!"])``.
    """

    extensions = Attribute(
        "List of optional features: 'groups', 'flush', 'statistics'."
    )
    expiry = Attribute("Seconds an unread message lives.")
    group_expiry = Attribute("Seconds a group member lives after its last add.")
    reactor = Attribute(
        "The reactor the layer schedules and connects with (an IReactorTime at least)."
    )
    cross_process = Attribute(
        "True when other processes can share this layer (Redis); False in memory."
    )

    def send(channel, message):
        """
        Send ``message`` (a dict) to ``channel``.

        Fires with ``None`` once the layer holds the message; fails with
        ``ChannelFull`` when the channel is at capacity, ``TypeError`` for a
        bad name or content, ``LayerUnavailable`` when the layer can't be
        reached. The layer keeps its own copy: later changes to ``message``
        by the sender are not seen by the receiver.
        """

    def receive(channels):
        """
        Wait for the next message on any of ``channels``.

        Fires with ``(channel_name, message)``. Names ending in ``!`` are
        prefixes for process-specific channels. The ``Deferred`` may be
        cancelled; a cancelled receive never takes a message.
        """

    def new_channel(pattern):
        """
        Fire with a new unique, unguessable channel name.

        ``pattern`` ends with ``!`` (process-specific) or ``?`` (single
        reader); at least 96 random bits follow it.
        """

    def group_add(group, channel):
        """Add ``channel`` to ``group`` (refreshing its group expiry)."""

    def group_discard(group, channel):
        """Remove ``channel`` from ``group``; no error when it isn't there."""

    def group_channels(group):
        """Fire with the list of live member channel names of ``group``."""

    def send_group(group, message):
        """
        Send ``message`` to every member of ``group``.

        A member whose channel is full misses this message; the drop is
        counted and logged and the others still get it.
        """

    def receivable(channel):
        """
        False when messages sent to ``channel`` are known not to be
        receivable now (the Redis server holding them is down), so a reply
        expected there would never arrive; True otherwise. Answers at once.
        """

    def flush():
        """Drop every message and group (for tests)."""

    def statistics():
        """
        Fire with a dict of counters: ``messages_sent``, ``messages_delivered``,
        ``messages_expired``, ``messages_dropped`` (all drops: expired, group
        members full, lost while disconnected), ``channel_full`` (sends refused
        with ``ChannelFull``), ``group_sends``, ``group_members_full``, and
        ``queue_depth``: ``{channel_name: queued messages}`` for channels with
        messages waiting.
        """
