"""Ray Serve's own way in: an application builder for ``serve run`` and Serve config files.

``exitsearch serve`` is one process that starts the application and takes it off when it stops.
Where Ray Serve runs applications itself (``serve deploy``, a KubeRay RayService), the same
application comes from :func:`app`::

    serve run exitsearch.serve.builder:app bundle=/models/config-299 slo_ms=100

or, in a Serve config file (``serve deploy serve.yaml``)::

    applications:
      - name: fmnist
        route_prefix: /fmnist
        import_path: exitsearch.serve.builder:app
        args: {bundle: /models/config-299, slo_ms: 100}
        deployments:
          - name: model
            num_replicas: 4
            ray_actor_options: {num_cpus: 1}

The arguments are ``exitsearch serve``'s per-replica options, spelled with underscores
(:data:`ARGUMENTS`); what Ray Serve's config decides (replicas, CPUs and GPUs per replica, host,
port, route prefix) stays there. The bundle's path must be readable where the replicas run (a
shared or baked-in folder). The application has two deployments: ``model`` (the replicas, as
``exitsearch serve`` runs them) and ``metrics`` (where the replicas' metrics meet, so that
``/metrics`` sums them whichever replica answers).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from exitsearch.errors import ConfigError

__all__ = ["ARGUMENTS", "app", "options_from_args", "serve_config"]

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _shown(value: Any) -> str:
    """``repr(value)``, cut short where it is long (a 400-digit number stays one line)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _integer(name: str, value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 10**18:
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?[0-9]{1,18}\s*", value):
        return int(value)
    raise ConfigError(f"{name} must be a whole number (up to 18 digits), got {_shown(value)}")


def _number(name: str, value: Any) -> float:
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        try:
            return float(value)
        except (ValueError, OverflowError):
            pass
    raise ConfigError(f"{name} must be a number, got {_shown(value)}")


def _flag(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigError(f"{name} must be true or false, got {_shown(value)}")


def _text(name: str, value: Any) -> str:
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise ConfigError(f"{name} must be a non-empty string, got {_shown(value)}")


def _budget(name: str, value: Any) -> str:
    """A budget as ``exitsearch serve --budget`` reads it: ``40%``, ``30MFLOPs`` or a number of
    FLOPs (which YAML gives as a number)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value)
    return _text(name, value)


#: The arguments :func:`app` takes besides ``bundle``: name -> (what it reads as, the
#: :class:`~exitsearch.serve.app.ServeOptions` field it sets; ``limits.`` for
#: :class:`~exitsearch.serve.requests.Limits`), as ``exitsearch serve``'s options of the same names.
ARGUMENTS: dict[str, tuple[Callable[[str, Any], Any], str]] = {
    "point": (_integer, "operating_point"),
    "budget": (_budget, "budget"),
    "slo_ms": (_number, "slo_ms"),
    "max_batch_size": (_integer, "max_batch_size"),
    "batch_wait_ms": (_number, "batch_wait_ms"),
    "patience": (_integer, "patience"),
    "top_k": (_integer, "top_k"),
    "threads": (_integer, "threads"),
    "device": (_text, "device"),
    "backbone_only": (_flag, "backbone_only"),
    "max_queued": (_integer, "max_queued"),
    "max_body_mb": (_number, "limits.max_bytes"),
    "max_images": (_integer, "limits.max_images"),
    "body_timeout_s": (_number, "limits.body_idle_s"),
}

# What Ray Serve's config says instead, for the arguments of ``exitsearch serve`` it owns
_OWNED_BY_SERVE = {
    "replicas": "num_replicas of the deployment 'model'",
    "num_replicas": "num_replicas of the deployment 'model'",
    "cpus_per_replica": "ray_actor_options of the deployment 'model'",
    "host": "http_options",
    "port": "http_options",
    "route_prefix": "the application's route_prefix",
    "ray_address": "serve run --address or serve deploy --address",
    "proxy_location": "proxy_location",
    "ingress": "proxy_location (and Ray's direct ingress settings)",
}


def options_from_args(args: Mapping[str, Any]) -> tuple[Path, Any]:
    """The bundle's path and the :class:`~exitsearch.serve.app.ServeOptions` that ``args`` (as
    ``serve run`` passes them, strings, or as a config file's YAML gives them) ask for.

    Raises:
        ConfigError: ``bundle`` missing, an argument unknown, owned by Ray Serve's config, or
            of the wrong type or range.
    """
    from exitsearch.serve.app import ServeOptions
    from exitsearch.serve.requests import Limits

    if not isinstance(args, Mapping):
        raise ConfigError(f"the arguments are a mapping of names to values, got {args!r}")
    given: dict[str, Any] = {}
    for key, value in args.items():
        name = str(key).replace("-", "_")
        if name in given:
            raise ConfigError(f"{name} is given twice (as {key!r} too)")
        given[name] = value
    if "bundle" not in given or given["bundle"] in (None, ""):
        raise ConfigError("the argument bundle (the exported bundle's folder) is missing")
    bundle = Path(_text("bundle", given.pop("bundle"))).expanduser()
    fields: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    for name, value in given.items():
        if name in _OWNED_BY_SERVE:
            raise ConfigError(f"{name} is Ray Serve's to set: use {_OWNED_BY_SERVE[name]}")
        if name not in ARGUMENTS:
            raise ConfigError(
                f"unknown argument {name!r}; the arguments are bundle, {', '.join(ARGUMENTS)}"
            )
        if value is None:  # a config file's `key:` with nothing after it: the default
            continue
        read, target = ARGUMENTS[name]
        parsed = read(name, value)
        if target == "limits.max_bytes":
            if not (math.isfinite(parsed) and parsed > 0):
                raise ConfigError(f"max_body_mb must be a positive number, got {_shown(value)}")
            parsed = max(1, int(parsed * 2**20))
        if target.startswith("limits."):
            limits[target.removeprefix("limits.")] = parsed
        else:
            fields[target] = parsed
    try:
        options = ServeOptions(**fields, limits=Limits(**limits))
    except ConfigError as exc:  # its messages name the command's options: --slo-ms is slo_ms
        names = "|".join(re.escape(n.replace("_", "-")) for n in ARGUMENTS)
        raise ConfigError(
            re.sub(rf"--({names})\b", lambda m: m.group(1).replace("-", "_"), str(exc))
        ) from None
    except ValueError as exc:  # Limits' own checks
        raise ConfigError(str(exc).replace("body_idle_s", "body_timeout_s")) from None
    return bundle, options


def app(args: dict[str, Any]) -> Any:
    """A Ray Serve application (``serve run exitsearch.serve.builder:app bundle=PATH ...``,
    or ``import_path`` of a Serve config): the bundle's replicas and their metrics.

    The bundle is checked here (checksums, operating points), where the application is built.

    Raises:
        ConfigError: bad arguments (:func:`options_from_args`), a latency target asked of a
            bundle without operating points, or a point or budget the bundle lacks.
        BundleError: the bundle is missing, altered or unreadable.
    """
    from exitsearch.serve.app import HubDeployment, check_bundle, model_deployment

    root, options = options_from_args(args)
    fixed, describe, sha = check_bundle(root, options)  # each replica checks it loads this one
    device = options.device.strip().lower()
    device = "cuda" if device.startswith("cuda") else device  # a replica sees only its GPU
    actor_options: dict[str, Any] = {"num_cpus": options.cpus_per_replica}
    if device == "cuda":
        actor_options["num_gpus"] = 1
    opts = asdict(options)
    opts.update(device=device, operating_point=fixed, budget=None, bundle_sha256=sha)
    hub = HubDeployment.bind()
    return model_deployment(options, actor_options).bind(str(root.resolve()), opts, hub, describe)


def serve_config(bundle: str | Path, options: Any, name: str | None = None) -> dict[str, Any]:
    """A Ray Serve config (``serve deploy``, ``serve run``, KubeRay's ``serveConfigV2``) that
    serves ``bundle`` as ``exitsearch serve`` with ``options`` would: its per-replica options as
    :func:`app`'s arguments (those not at their defaults), its replicas, CPUs and GPUs per
    replica, host, port, proxy location and route prefix where Ray Serve's config says them.
    The application is named ``name`` (default: the bundle folder's name).

    Raises:
        ConfigError, BundleError: what :func:`app` raises for these arguments.
    """
    from exitsearch.serve.app import ServeOptions
    from exitsearch.serve.requests import Limits

    root = Path(bundle).expanduser().resolve()
    default, limits = ServeOptions(), Limits()
    args: dict[str, Any] = {"bundle": str(root)}
    for arg, (_, target) in ARGUMENTS.items():
        if target.startswith("limits."):
            field = target.removeprefix("limits.")
            value, before = getattr(options.limits, field), getattr(limits, field)
            if field == "max_bytes":
                value, before = value / 2**20, before / 2**20
        else:
            value, before = getattr(options, target), getattr(default, target)
        if value != before:
            args[arg] = value
    app(args)  # the bundle, its points and the arguments checked now, not at deploy time
    actor: dict[str, Any] = {"num_cpus": options.cpus_per_replica}
    if options.device.strip().lower().startswith("cuda"):
        actor["num_gpus"] = 1
    return {
        "proxy_location": options.proxy_location or "EveryNode",
        "http_options": {"host": options.host, "port": options.port},
        "applications": [
            {
                "name": name or root.name,
                "route_prefix": options.route_prefix,
                "import_path": "exitsearch.serve.builder:app",
                "args": args,
                "deployments": [
                    {
                        "name": "model",
                        "num_replicas": options.replicas,
                        "ray_actor_options": actor,
                    }
                ],
            }
        ],
    }
