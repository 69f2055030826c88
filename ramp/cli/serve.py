"""``ramp serve-retriever``: the Search-R1-compatible HTTP retrieval server."""

from __future__ import annotations

import errno
import socket
from typing import Annotated

import typer
import uvicorn

from ramp.cli.options import Index, Overrides, load_with_retriever
from ramp.errors import UserError
from ramp.retrieval.config import RetrievalSettings, build_retriever
from ramp.retrieval.indexing import read_manifest
from ramp.retrieval.server import create_app


def serve_retriever_command(
    index: Index = None,
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000)")] = None,
    config: Annotated[str, typer.Option(help="Config file or recipe name")] = "retrieval",
    overrides: Overrides = None,
) -> None:
    """Serve a local index (lucene, dense or hybrid) or a simulated search engine (retriever.kind=simulated)
    over HTTP (POST /retrieve, GET /health)."""
    server_options = [f"server.host={host}"] * (host is not None) + [f"server.port={port}"] * (
        port is not None
    )
    settings = load_with_retriever(
        RetrievalSettings, config, [*(overrides or []), *server_options], index, None
    )
    retriever_config = settings.retriever
    kind = retriever_config.kind
    if kind == "http":
        raise UserError(
            "serve-retriever serves a local index or a simulated engine: give --index "
            "(or retriever.kind=lucene|dense|hybrid) or --set retriever.kind=simulated"
        )
    if kind == "simulated":
        simulator = retriever_config.simulator
        info: dict[str, object] = {
            "kind": kind,
            "simulator": simulator.backend,
            "model": simulator.model,
            "noise_probability": simulator.noise.p_start,
        }
        what = f"a simulated search engine ({simulator.backend} {simulator.model or simulator.base_url})"
    else:
        manifest = read_manifest(retriever_config.index or "")
        info = {"index": str(retriever_config.index), "kind": kind, "documents": manifest["documents"]}
        if kind == "hybrid":
            info["dense_index"] = str(retriever_config.dense_index)
        what = f"{info['documents']} documents of {info['index']} ({kind})"
    listener = _bind(settings.server.host, settings.server.port)
    retriever = build_retriever(retriever_config)
    try:
        app = create_app(retriever, settings.server, info)
        where = f"http://{settings.server.host}:{listener.getsockname()[1]}"
        typer.echo(f"serving {what} on {where} (Ctrl-C stops)")
        uvicorn.Server(uvicorn.Config(app, log_level="info")).run(sockets=[listener])
    finally:
        retriever.close()
        listener.close()


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, bound before the index loads so a taken port fails at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as err:
        listener.close()
        if err.errno == errno.EADDRINUSE:
            raise UserError(f"port {port} on {host} is in use: pick another with --port") from None
        raise UserError(f"cannot listen on {host}:{port} ({err.strerror}): check --host and --port") from None
    listener.listen(2048)
    return listener
