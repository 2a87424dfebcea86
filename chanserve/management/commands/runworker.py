"""``manage.py runworker``: a worker process consuming channels of a cross-process layer."""

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from .. import _run


class Command(BaseCommand):
    help = "Runs a chanserve worker: consumes the routed channels of a cross-process channel layer."

    def add_arguments(self, parser):
        parser.add_argument(
            "--layer", default="default",
            help="Alias of the channel layer in CHANNEL_LAYERS (default: 'default').")
        parser.add_argument(
            "--threads", type=int, default=None, help="Worker thread pool size.")
        parser.add_argument(
            "--only-channels", action="append", default=[], metavar="GLOB",
            help="Only consume channels matching this glob (repeatable).")
        parser.add_argument(
            "--exclude-channels", action="append", default=[], metavar="GLOB",
            help="Do not consume channels matching this glob (repeatable).")

    def handle(self, *args, **options):
        alias = options["layer"]
        self.check_layer(alias)
        argv = ["--worker-only", "--layer", alias]
        if options["threads"] is not None:
            if options["threads"] < 1:
                raise CommandError("--threads must be at least 1")
            argv += ["--threads", str(options["threads"])]
        for pattern in options["only_channels"]:
            argv += ["--only-channels", pattern]
        for pattern in options["exclude_channels"]:
            argv += ["--exclude-channels", pattern]

        from twisted.internet import reactor

        _run.start_logging(options.get("verbosity", 1))
        _run.install_static_handler({})
        service = _run.build_service(argv, reactor)
        channels = self.channels(alias, options)
        self.stdout.write(
            f"Running worker against channel layer {alias!r} for channels: "
            f"{', '.join(channels) if channels else '(none)'}")
        self.stdout.flush()
        try:
            _run.run_reactor(reactor, service)
        except KeyboardInterrupt:
            pass

    def check_layer(self, alias):
        """Refuse a layer other processes cannot reach, with a clear message."""
        from ...layers._settings import import_backend, layer_settings
        try:
            conf = layer_settings(alias)
            backend = import_backend(alias, conf["BACKEND"])
        except ImproperlyConfigured as e:
            raise CommandError(str(e)) from None
        if getattr(backend, "cross_process", True) is False:
            raise CommandError(
                f"runworker needs a cross-process channel layer, but CHANNEL_LAYERS[{alias!r}] "
                f"uses {conf['BACKEND']}, which lives inside one process: a separate worker "
                f"would never see its messages. Use chanserve.layers.RedisChannelLayer, or "
                f"run 'manage.py runserver' (interface server and workers in one process).")

    def channels(self, alias, options):
        """The channels this worker will consume (for the start-up line)."""
        try:
            from ...routing import load_routing
            from ...worker import select_channels
            return list(select_channels(load_routing(alias).channels,
                                        options["only_channels"], options["exclude_channels"]))
        except Exception:
            return []
