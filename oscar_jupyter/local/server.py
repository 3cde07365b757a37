"""The local OSCAR's REST API (tornado): OSCAR v4.1's paths, status codes, bodies and auth rules,
over `LocalOscar` (oscar.py), which does the work.

Run as `python -m oscar_jupyter.local.server --home H --port P [--node-name N] [--executor E]`;
`daemon.start` does that, detached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import tornado.httpserver
import tornado.ioloop
import tornado.web

from . import kueue
from .kubernetes_api import kubernetes_routes
from .oscar import (
    LocalOscar,
)
from .releases import (
    DEFAULT_INTERLINK_RELEASE,
    DEFAULT_PLUGIN_RELEASE,
    INTERLINK_RELEASES,
    PLUGIN_RELEASES,
)
from .services import (
    DEFAULT_NODE_NAME,
    NOT_FOUND_TEXT,
    ApiError,
)
from .singularity import DEFAULT_SESSIONDIR_MAX_SIZE_MIB
from .state import (
    HomeLayout,
    ensure_admin_password,
)
from .users import (
    TOKEN_PATH,
    Caller,
    TokenError,
    TokenExpired,
    ensure_secret,
    exchange_refresh_token,
    issuer,
)
from .virtual_kubelet import DEFAULT_CPU_CAPACITY, DEFAULT_MEMORY_CAPACITY

log = logging.getLogger("oscar_jupyter.local.server")


class _Handler(tornado.web.RequestHandler):
    """Plain-text errors as gin writes them; 404 for unknown methods, never a stack trace."""

    def initialize(self, oscar: LocalOscar) -> None:
        self.oscar = oscar

    def send_text(self, status: int, text: str = "") -> None:
        self.set_status(status)
        if text:
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.write(text)
        else:
            self.clear_header("Content-Type")
        self.finish()

    def send_json(self, status: int, document: Any) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(document))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, ApiError):
            self.set_status(error.status)
            for name, value in error.headers.items():
                self.set_header(name, value)
            if error.text:
                self.set_header("Content-Type", "text/plain; charset=utf-8")
                self.write(error.text)
            else:
                self.clear_header("Content-Type")
            return
        if status_code == 405:  # gin answers an unrouted method with its plain 404
            self.set_status(404)
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.write(NOT_FOUND_TEXT)
            return
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        if error is not None and status_code == 500:
            self.write(f"internal error of the local OSCAR: {type(error).__name__}: {error}")
        else:
            self.write(self._reason)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, ApiError):
            return
        super().log_exception(typ, value, tb)


class _SystemHandler(_Handler):
    """`/system/*`: Basic with the admin account, or `Bearer` with a local user's access token
    (`pkg/utils/auth/auth.go` `CustomAuth`)."""

    caller: Caller

    def prepare(self) -> None:
        self.caller = self.oscar.system_caller(self.request.headers.get("Authorization"))


class HealthHandler(_Handler):
    def get(self) -> None:
        self.send_text(200, "Ok")


class InfoHandler(_SystemHandler):
    def get(self) -> None:
        self.send_json(200, self.oscar.info())


class ConfigHandler(_SystemHandler):
    def get(self) -> None:
        self.send_json(200, self.oscar.config(self.caller))


class BucketsHandler(_SystemHandler):
    def get(self) -> None:
        self.send_json(200, self.oscar.list_buckets(self.caller))

    def post(self) -> None:
        self.oscar.create_bucket(self.request.body, self.caller)
        self.send_text(201)


class StatusHandler(_SystemHandler):
    def get(self) -> None:
        self.send_json(200, self.oscar.status(self.caller))


class ServicesHandler(_SystemHandler):
    def get(self) -> None:
        self.send_json(200, self.oscar.list_services(self.caller))

    def post(self) -> None:
        self.oscar.create_service(self.request.body, self.caller)
        self.send_text(201)

    def put(self) -> None:
        self.oscar.update_service(self.request.body, self.caller)
        self.send_text(204)


class ServiceHandler(_SystemHandler):
    def get(self, name: str) -> None:
        self.send_json(200, self.oscar.get_service(name, self.caller))

    def delete(self, name: str) -> None:
        self.oscar.delete_service(name, self.caller)
        self.send_text(204)


class JobHandler(_Handler):
    """`POST /job/{service}`: only `Authorization: Bearer <service token>`."""

    def post(self, service_name: str) -> None:
        self.oscar.submit_job(
            service_name,
            self.request.headers.get("Authorization"),
            self.request.headers.get("X-Delegated-Job-ID"),
            self.request.body,
        )
        self.send_text(201)


class JobsHandler(_SystemHandler):
    def get(self, service_name: str) -> None:
        page = self.get_query_argument("page", "")
        self.send_json(200, self.oscar.job_listing(service_name, self.caller, page))

    def delete(self, service_name: str) -> None:
        everything = self.get_query_argument("all", "false").lower() in ("1", "t", "true")
        self.oscar.delete_jobs(service_name, everything=everything, caller=self.caller)
        self.send_text(204)


class JobLogHandler(_SystemHandler):
    def get(self, service_name: str, job_name: str) -> None:
        text = self.oscar.job_log(service_name, job_name, self.caller)
        self.set_status(200)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(text)

    def delete(self, service_name: str, job_name: str) -> None:
        self.oscar.delete_job(service_name, job_name, self.caller)
        self.send_text(204)


class TokenHandler(_Handler):
    """Keycloak's token endpoint, `grant_type=refresh_token` only (what oscar-cli and
    config.py's refresh flow use). Errors as Keycloak words them."""

    def check_xsrf_cookie(self) -> None:
        pass

    def post(self) -> None:
        form = {
            key: self.get_body_argument(key, "")
            for key in ("grant_type", "refresh_token", "client_id", "scope")
        }
        if not form["client_id"]:
            form.pop("client_id")
        if not self.oscar.oidc_secret:
            raise ApiError(404, NOT_FOUND_TEXT)
        try:
            answer = exchange_refresh_token(
                form,
                iss=self.oscar.issuer,
                secret=self.oscar.oidc_secret,
                lifetime=self.oscar.access_token_lifetime,
            )
        except TokenError as error:
            # Keycloak's words: an expired refresh token "is not active"; one it cannot
            # verify (another realm's key, altered) is "Invalid refresh token".
            said = "Token is not active" if isinstance(error, TokenExpired) else None
            self.send_json(
                400,
                {"error": "invalid_grant", "error_description": said or "Invalid refresh token"},
            )
            return
        self.set_header("Cache-Control", "no-store")
        self.send_json(200, answer)


class NotFoundHandler(_Handler):
    def prepare(self) -> None:
        raise ApiError(404, NOT_FOUND_TEXT)


def make_app(oscar: LocalOscar) -> tornado.web.Application:
    """The tornado application serving OSCAR's REST API for `oscar`."""
    args = {"oscar": oscar}
    routes = [
        (r"/health", HealthHandler, args),
        (r"/system/info", InfoHandler, args),
        (r"/system/config", ConfigHandler, args),
        (r"/system/status", StatusHandler, args),
        (r"/system/buckets", BucketsHandler, args),
        (r"/system/services", ServicesHandler, args),
        (r"/system/services/([^/]+)", ServiceHandler, args),
        (r"/job/([^/]+)", JobHandler, args),
        (r"/system/logs/([^/]+)", JobsHandler, args),
        (r"/system/logs/([^/]+)/([^/]+)", JobLogHandler, args),
        (TOKEN_PATH, TokenHandler, args),
        *kubernetes_routes(oscar),
    ]
    return tornado.web.Application(
        routes,
        default_handler_class=NotFoundHandler,
        default_handler_args=args,
        serve_traceback=False,
    )


# --- process entry point ------------------------------------------------------------------------


def build_local_oscar(
    home: Path,
    *,
    node_name: str = DEFAULT_NODE_NAME,
    executor_preference: str = "auto",
    endpoint: str = "",
    kueue_quota: kueue.Resources | None = None,
    node_gpus: int = 0,
    image_prefix: str = "docker://",
    real_status: bool = False,
    job_listing_limit: int = 70,
    storage: Any = None,
    job_python: str | None = None,
    plugin_release: str = DEFAULT_PLUGIN_RELEASE,
    interlink_release: str = DEFAULT_INTERLINK_RELEASE,
    node_cpu: str = DEFAULT_CPU_CAPACITY,
    node_memory: str = DEFAULT_MEMORY_CAPACITY,
    sessiondir_max_size: int = DEFAULT_SESSIONDIR_MAX_SIZE_MIB,
) -> LocalOscar:
    """Wire the real parts: executor, container runtime, supervisor kit, plugin configuration."""
    from .executors import choose_executor
    from .interlink import PluginConfig
    from .singularity import runtime_command
    from .supervisor_kit import ensure_supervisor_kit

    layout = HomeLayout(home)
    layout.create()
    password = ensure_admin_password(layout)
    executor, reason = choose_executor(executor_preference)
    singularity_path, runtime_description = runtime_command(
        home, job_python=job_python, sessiondir_max_size_mib=sessiondir_max_size
    )
    plugin_config = PluginConfig(
        data_root=str(layout.jobs_dir) + "/",
        singularity_path=str(singularity_path),
        image_prefix=image_prefix,
        release=plugin_release,
    )
    kit_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="supervisor-kit")
    kit = kit_pool.submit(ensure_supervisor_kit)  # shared cache: singularity.py finds it there
    kit.add_done_callback(_report_supervisor_kit)
    kit_pool.shutdown(wait=False)
    return LocalOscar(
        layout,
        password=password,
        executor=executor,
        executor_reason=reason,
        runtime_description=runtime_description,
        plugin_config=plugin_config,
        node_name=node_name,
        supervisor_kit=kit,
        oidc_secret=ensure_secret(layout),
        issuer=issuer(endpoint) if endpoint else "",
        kueue_quota=kueue_quota,
        node_gpus=node_gpus,
        real_status=real_status,
        job_listing_limit=job_listing_limit,
        storage=storage,
        interlink_release=interlink_release,
        node_cpu=node_cpu,
        node_memory=node_memory,
    )


def _report_supervisor_kit(kit: Future) -> None:
    error = kit.exception()
    if error is not None:
        log.error("the supervisor kit could not be built, jobs will fail: %s", error)
    else:
        log.info("supervisor kit ready: %s", kit.result())


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m oscar_jupyter.local.server",
        description="Serve the local OSCAR's REST API "
        "(normally started by `oscar-jupyter local start`).",
    )
    parser.add_argument("--home", required=True, type=Path, help="the local OSCAR's home folder")
    parser.add_argument("--port", required=True, type=int, help="TCP port on --host")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--node-name", default=DEFAULT_NODE_NAME, help="the virtual node's name")
    parser.add_argument("--executor", default="auto", choices=("auto", "slurm", "process"))
    parser.add_argument("--kueue-cpu", default=kueue.DEFAULT_CPU)
    parser.add_argument("--kueue-memory", default=kueue.DEFAULT_MEMORY)
    parser.add_argument("--kueue-gpu", default=kueue.DEFAULT_GPU)
    parser.add_argument("--node-gpus", type=int, default=0)
    parser.add_argument("--image-prefix", default="docker://")
    # By default /system/status answers as on a real cluster: no virtual node (it has no metrics).
    parser.add_argument(
        "--metrics-status",
        dest="real_status",
        action="store_false",
        help="also list the virtual node in /system/status, as if it had metrics",
    )
    parser.add_argument("--job-listing-limit", type=int, default=70)
    parser.add_argument(
        "--job-python", help="the python3 that plays the image's (default: the host's)"
    )
    parser.add_argument("--plugin-version", default=DEFAULT_PLUGIN_RELEASE, choices=PLUGIN_RELEASES)
    parser.add_argument(
        "--interlink-version", default=DEFAULT_INTERLINK_RELEASE, choices=INTERLINK_RELEASES
    )
    parser.add_argument("--node-cpu", default=DEFAULT_CPU_CAPACITY)
    parser.add_argument("--node-memory", default=DEFAULT_MEMORY_CAPACITY)
    parser.add_argument(
        "--sessiondir-max-size", type=int, default=DEFAULT_SESSIONDIR_MAX_SIZE_MIB, help="MiB"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from .object_store import ObjectStoreConfig, start_object_store
    from .storage_accounts import StorageAccounts

    store = None
    try:
        # OSCAR's MinIO: an S3 server on loopback, living as long as this server
        layout = HomeLayout(args.home)
        layout.create()
        store = start_object_store(layout.root, layout.root / "object-store.log")
        storage = StorageAccounts(ObjectStoreConfig.read(layout.root))
        oscar = build_local_oscar(
            args.home,
            node_name=args.node_name,
            executor_preference=args.executor,
            endpoint=f"http://{args.host}:{args.port}",
            kueue_quota=kueue.quota(args.kueue_cpu, args.kueue_memory, args.kueue_gpu),
            node_gpus=args.node_gpus,
            image_prefix=args.image_prefix,
            real_status=args.real_status,
            job_listing_limit=args.job_listing_limit,
            storage=storage,
            job_python=args.job_python,
            plugin_release=args.plugin_version,
            interlink_release=args.interlink_version,
            node_cpu=args.node_cpu,
            node_memory=args.node_memory,
            sessiondir_max_size=args.sessiondir_max_size,
        )
    except Exception as error:
        log.error("cannot start the local OSCAR: %s", error)
        if store is not None:
            store.kill()
        return 2
    try:
        return asyncio.run(_serve(oscar, args.host, args.port))
    finally:
        store.terminate()
        try:
            store.wait(10)
        except Exception:
            store.kill()
        log.info("local OSCAR stopped")


async def _serve(oscar: LocalOscar, host: str, port: int) -> int:
    server = tornado.httpserver.HTTPServer(make_app(oscar))
    try:
        server.listen(port, address=host)
    except OSError as error:
        log.error(
            "cannot listen on %s:%d (%s); choose another port with --port or "
            "OSCAR_JUPYTER_LOCAL_PORT",
            host,
            port,
            error.strerror or error,
        )
        return 3
    kueue_ticker = tornado.ioloop.PeriodicCallback(oscar.tick, 1000)
    kueue_ticker.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    log.info(
        "local OSCAR listening on http://%s:%d (executor %s: %s; runtime %s; node %s; "
        "Slurm plugin %s, interLink %s)",
        host,
        port,
        oscar.executor.kind,
        oscar.executor_reason,
        oscar.runtime_description,
        oscar.node_name,
        oscar.plugin_release,
        oscar.interlink_release,
    )
    await stopping.wait()
    log.info("stopping: no new requests, cancelling unfinished jobs")
    server.stop()
    kueue_ticker.stop()
    await oscar.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
