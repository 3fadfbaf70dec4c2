"""``exitsearch serve``: an exported bundle behind HTTP on Ray Serve, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import math
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from exitsearch_cli._console import (
    TERMINATED,
    Terminated,
    console,
    err_console,
    handle_errors,
    raise_terminated,
)
from rich import box
from rich.markup import escape
from rich.table import Table

from exitsearch.errors import BundleError, ConfigError

if TYPE_CHECKING:
    from exitsearch.serve.app import ServeOptions, Server


@handle_errors
def serve(
    bundle: Annotated[
        str, typer.Argument(metavar="BUNDLE", help="Bundle folder written by `exitsearch export`.")
    ],
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: all).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8000,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            envvar="RAY_ADDRESS",
            help="Serve on this Ray cluster (HOST:PORT of `ray start --head`); the bundle is "
            "shipped to its nodes. Default: a local Ray started for the server.",
        ),
    ] = None,
    proxy_location: Annotated[
        str | None,
        typer.Option(
            help="Where Ray Serve's HTTP proxy runs: EveryNode (on every node with a replica, "
            "for a load balancer in front) or HeadOnly. Default: EveryNode; implies "
            "--ingress proxy.",
            show_default=False,
        ),
    ] = None,
    ingress: Annotated[
        str,
        typer.Option(
            help="direct: each replica listens on its own port (--port, --port + 1, ...), no "
            "proxy in between (local Ray only); proxy: Ray Serve's HTTP proxy on --port routes "
            "to the replicas; auto: direct for one replica on a local Ray, else proxy."
        ),
    ] = "auto",
    replicas: Annotated[
        int, typer.Option(help="Model replicas (Ray spreads them over the cluster's nodes).")
    ] = 1,
    device: Annotated[
        str, typer.Option(help="cpu, cuda (one GPU per replica) or auto (CUDA when there is one).")
    ] = "cpu",
    threads: Annotated[int, typer.Option(help="PyTorch CPU threads per replica.")] = 1,
    cpus_per_replica: Annotated[
        float, typer.Option(help="Logical CPUs Ray reserves for each replica.")
    ] = 1.0,
    point: Annotated[
        int | None,
        typer.Option(
            "--point",
            help="Operating point (index; GET / lists them): fixed, or with --slo-ms the "
            "one used while load allows.",
        ),
    ] = None,
    budget: Annotated[
        str | None,
        typer.Option(
            "--budget",
            help="Operating point as --point: the most accurate within this mean cost per "
            "sample (e.g. 40%, 30MFLOPs).",
        ),
    ] = None,
    slo_ms: Annotated[
        float | None,
        typer.Option(
            "--slo-ms",
            help="p99 latency target (ms, server side): move to cheaper operating points when "
            "the queue puts it at risk, back when load falls; refuse (503) what even the "
            "cheapest cannot answer in time. Default: a fixed operating point.",
        ),
    ] = None,
    max_batch_size: Annotated[
        int, typer.Option(help="Dynamic batching: images per model batch at most.")
    ] = 32,
    batch_wait_ms: Annotated[
        float, typer.Option(help="Dynamic batching: how long a batch waits to fill (ms).")
    ] = 2.0,
    patience: Annotated[
        int,
        typer.Option(
            help="Stream mode: how many later batches an image that goes on past an exit "
            "waits for, so the deeper blocks run on fuller batches (0: each batch finishes "
            "at once)."
        ),
    ] = 2,
    max_queued: Annotated[
        int,
        typer.Option(
            help="Requests a replica answers at once; as many more wait for a place (in "
            "the replica with direct ingress, in the proxy otherwise), and beyond them "
            "requests get 503."
        ),
    ] = 256,
    max_body_mb: Annotated[float, typer.Option(help="Largest request body (MiB).")] = 8.0,
    max_images: Annotated[int, typer.Option(help="Most images in one request.")] = 64,
    body_timeout_s: Annotated[
        float,
        typer.Option(
            help="Seconds a request's body may send nothing; then 408 (a client stalled "
            "mid-upload would hold its place among the requests a replica takes)."
        ),
    ] = 10.0,
    top_k: Annotated[int, typer.Option(help="Classes returned per image by default.")] = 5,
    drain_s: Annotated[
        float,
        typer.Option(
            help="On Ctrl-C or SIGTERM, go on refusing new requests (503) and answering "
            "/healthz with draining for at least this many seconds before the port closes, "
            "so that a load balancer's health checks see it go (0: close once the requests "
            "in flight are answered)."
        ),
    ] = 0.0,
    backbone_only: Annotated[
        bool,
        typer.Option(
            "--backbone-only", help="Serve the bundle's backbone without exits (a baseline)."
        ),
    ] = False,
    write_config: Annotated[
        Path | None,
        typer.Option(
            help="Serve nothing: write a Ray Serve config (YAML) that serves the bundle with "
            "these options, for serve deploy or KubeRay; the file must not exist yet.",
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """Serve an exported model over HTTP (Ray Serve) with per-sample exits and dynamic batching.

    POST /predict takes image bytes (PNG, JPEG, WebP) or JSON {"image": base64} /
    {"images": [...]}; GET /healthz, GET /metrics (Prometheus), GET / (the operating points).
    Runs until Ctrl-C or SIGTERM, then finishes the requests in flight.

    Where Ray Serve runs the application itself (serve deploy, KubeRay): import path
    exitsearch.serve.builder:app, these options as arguments (bundle=PATH slo_ms=100)."""
    if not Path(bundle).is_dir():  # said before the seconds of importing Ray and torch
        raise BundleError.not_a_folder(bundle)
    from exitsearch.serve.app import ServeOptions, start_server
    from exitsearch.serve.requests import Limits

    if not (math.isfinite(max_body_mb) and max_body_mb > 0):
        raise ConfigError(f"--max-body-mb must be a positive number of MiB, got {max_body_mb}")
    if max_images < 1:
        raise ConfigError(f"--max-images {max_images} is not allowed (at least 1)")
    if not (math.isfinite(drain_s) and drain_s >= 0):
        raise ConfigError(f"--drain-s must be a finite number of seconds, 0 or more, got {drain_s}")
    if not (math.isfinite(body_timeout_s) and body_timeout_s > 0):
        raise ConfigError(
            f"--body-timeout-s must be a positive number of seconds, got {body_timeout_s}"
        )
    try:
        limits = Limits(
            max_bytes=int(max_body_mb * 2**20),
            max_images=max_images,
            body_idle_s=body_timeout_s,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    options = ServeOptions(
        host=host,
        port=port,
        replicas=replicas,
        ray_address=ray_address,
        device=device,
        threads=threads,
        cpus_per_replica=cpus_per_replica,
        operating_point=point,
        budget=budget,
        slo_ms=slo_ms,
        max_batch_size=max_batch_size,
        batch_wait_ms=batch_wait_ms,
        patience=patience,
        max_queued=max_queued,
        limits=limits,
        top_k=top_k,
        backbone_only=backbone_only,
        proxy_location=proxy_location,
        ingress=ingress,
    )
    if write_config is not None:
        if ray_address is not None:
            raise ConfigError(
                "--write-config writes a file and deploys nothing: pass the cluster to "
                "`serve deploy --address` instead of --ray-address"
            )
        if ingress == "direct":
            raise ConfigError(
                "--ingress direct is not a Serve config's to set (Ray's direct ingress is set "
                "in the environment where Ray starts): the config routes through the proxy"
            )
        _write_config(bundle, options, write_config)
        return
    # A background job of a script starts with SIGINT ignored: `kill -INT` (what Ctrl-C sends)
    # stops this server all the same. SIGTERM (and SIGHUP: a closed terminal or ssh session)
    # stop it the way Ctrl-C does, while starting too (start_server keeps this handler through
    # Ray's start); a server killed outright would leave its replicas on a cluster. Under
    # nohup (SIGHUP ignored) a closed terminal leaves it serving, as nohup means.
    stoppers = [signal.SIGTERM]
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        stoppers.append(signal.SIGHUP)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in stoppers:
        signal.signal(signum, raise_terminated)
    err_console.print(f"checking {bundle}, then starting Ray Serve ...")
    try:
        server = start_server(bundle, options)
    except Terminated:
        err_console.print("terminated while starting: nothing is served")
        raise typer.Exit(TERMINATED) from None
    except KeyboardInterrupt:
        err_console.print("interrupted while starting: nothing is served")
        raise typer.Exit(130) from None
    for signum in stoppers:  # Ray may have set its own meanwhile
        signal.signal(signum, raise_terminated)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _print(server)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (raised as KeyboardInterrupt)
        linger = f", refusing new ones for {drain_s:g} s at least" if drain_s else ""
        err_console.print(
            f"stopping: finishing the requests in flight{linger} (Ctrl-C again stops at once) ..."
        )
    finally:
        try:
            server.stop(linger_s=drain_s)
        except KeyboardInterrupt as again:  # a second Ctrl-C or SIGTERM while draining
            err_console.print(_stopped_at_once(server))
            raise typer.Exit(TERMINATED if isinstance(again, Terminated) else 130) from None
    err_console.print("server stopped")


def _write_config(bundle: str, options: ServeOptions, path: Path) -> None:
    """Write the Ray Serve config for ``bundle`` served with ``options`` to ``path``."""
    import yaml

    from exitsearch._io import atomic_write_text
    from exitsearch.serve.builder import serve_config

    if path.exists():
        raise ConfigError(f"{path} exists already: choose another file (nothing was written)")
    config = serve_config(bundle, options)
    head = (
        "# Ray Serve config: `serve deploy FILE` (Ray's dashboard on the head) or `serve run FILE`\n"
        "# (exitsearch installed and the bundle at this path on every node)\n"
    )
    atomic_write_text(path, head + yaml.safe_dump(config, sort_keys=False))
    app = config["applications"][0]
    console.print(
        f"wrote {path}: application {app['name']!r} at {app['route_prefix']}, "
        f"{app['deployments'][0]['num_replicas']} replica(s); deploy it with `serve deploy {path}`"
    )


def _stopped_at_once(server: Server) -> str:
    in_flight = server.in_flight
    if not server.local:  # the cluster's replicas are not this process's to drop
        o = server.options
        left = (
            f"; Ray Serve, started for this server, stays there listening on {o.host}:{o.port} "
            "(the next server takes that --port, or `serve shutdown` ends it)"
            if server.started_serve
            else ""
        )
        return (
            "stopped without waiting: the model is taken off the cluster, whose replicas "
            "finish the requests they hold (up to 30 s) on their own" + left
        )
    if in_flight == 0:
        return "stopped at once, after every request had been answered"
    if in_flight is None:
        return "stopped at once: any request still in flight was dropped"
    s = "" if in_flight == 1 else "s"
    return f"stopped at once: {in_flight} request{s} still in flight (last report) were dropped"


def _target_text(describe: dict, slo_ms: float | None) -> str:
    """The latency target, and the operating points it moves between."""
    from exitsearch.serve.target import ladder, top_point

    if not slo_ms:
        return "none"
    points = describe["operating_points"]
    costs = [p["mean_flops"] for p in points]
    accuracies = [p["val_accuracy"] for p in points]
    top = top_point(costs, accuracies, describe["default_operating_point"])
    steps = ladder(costs, accuracies, top)
    if len(steps) == 1:
        return f"p99 {slo_ms:g} ms: point {top} is the cheapest, so what it cannot answer in time is refused"
    low = steps[-1]
    return (
        f"p99 {slo_ms:g} ms: from point {top} ({points[top]['mean_cost']}) down to point {low} "
        f"({points[low]['mean_cost']}) over {len(steps)} points as load grows"
    )


def _print(server: Server) -> None:
    d = server.describe
    o = server.options
    table = Table(box=box.SIMPLE, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row(
        "model",
        f"{d['backbone']} {'x'.join(map(str, d['input_size']))}, {d['num_classes']} classes",
    )
    if d["backbone_only"]:
        table.add_row("exits", "none (backbone only)")
    else:
        table.add_row("exits", escape(", ".join(d["exits"])))
        default = d["default_operating_point"]
        points = d["operating_points"]
        if default is not None:
            p = points[default]
            table.add_row(
                "operating point",
                f"{default} (of 0-{len(points) - 1}): {p['mean_cost']} per image "
                f"({p['speedup']:.2f}x), validation accuracy {p['val_accuracy']:.4f}",
            )
    table.add_row("latency target", _target_text(d, o.slo_ms))
    table.add_row(
        "replicas",
        f"{o.replicas} on {'a local Ray' if server.local else o.ray_address} "
        f"({server.device}), "
        f"batches of up to {o.max_batch_size} ({o.batch_wait_ms:g} ms wait)"
        + (
            ""
            if o.backbone_only
            else f", an image past an exit waits for up to {o.patience} later "
            + ("batch" if o.patience == 1 else "batches")
        ),
    )
    if server.ingress == "direct":
        table.add_row(
            "ingress",
            "direct: the replica answers itself"
            if len(server.urls) == 1
            else "direct: one address per replica (put a load balancer in front): "
            + ", ".join(server.urls),
        )
    else:
        table.add_row("ingress", "Ray Serve's HTTP proxy")
    table.add_row(
        "predict",
        f"curl --data-binary @image.png -H 'Content-Type: image/png' {server.url}/predict",
    )
    table.add_row("health", f"{server.url}/healthz")
    table.add_row("metrics", f"{server.url}/metrics (Prometheus)")
    table.add_row("points", f"{server.url}/ (the model and its operating points)")
    console.print(table)
    if server.replaced:
        err_console.print(
            "took off the model that a server now gone (killed, or its terminal closed) had "
            "left on this cluster"
        )
    err_console.print("serving; Ctrl-C or SIGTERM stops after the requests in flight")
