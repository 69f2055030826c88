"""``ramp index``: Lucene BM25 indexes and dense (encoder + FAISS) indexes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from ramp.cli.options import BEAM_COMMAND, PipelineOptions, Verbose, Workers, beam_args
from ramp.config import ConfigError
from ramp.logs import quiet_logs
from ramp.pipelines.dense_index import build_dense_index
from ramp.retrieval.dense import EMBEDDINGS_DIR, FaissSpec
from ramp.retrieval.encoder import resolve_spec
from ramp.retrieval.indexing import build_index, read_manifest

index_app = typer.Typer(no_args_is_help=True)


@index_app.command("build", context_settings=BEAM_COMMAND)
def build(
    ctx: typer.Context,
    corpus: Annotated[
        list[str],
        typer.Option(help="wiki-18 JSONL, passages Parquet, a directory of them or a glob; repeatable"),
    ],
    index: Annotated[Path, typer.Option(help="Output index directory")],
    kind: Annotated[str, typer.Option(help="lucene (BM25) | dense (encoder + FAISS)")] = "lucene",
    threads: Annotated[int, typer.Option(min=1, help="Indexing threads (lucene)")] = 4,
    shards: Annotated[
        int | None, typer.Option(min=1, help="Collection files (lucene, default: threads); embedding shards")
    ] = None,
    optimize: Annotated[bool, typer.Option(help="Merge into one segment (lucene; faster search)")] = True,
    overwrite: Annotated[
        bool, typer.Option(help="Replace a non-empty index directory (dense: keeps IDX/embeddings)")
    ] = False,
    encoder: Annotated[
        str | None, typer.Option(help="dense: minilm (bundled all-MiniLM-L6-v2), a model directory or name")
    ] = None,
    faiss: Annotated[str, typer.Option(help="dense: flat | hnsw | ivfpq")] = "flat",
    nlist: Annotated[
        int | None, typer.Option(min=1, help="ivfpq: inverted lists (default ~4 sqrt N)")
    ] = None,
    m: Annotated[int | None, typer.Option(min=1, help="ivfpq: sub-quantizers, bytes per vector")] = None,
    nbits: Annotated[int, typer.Option(min=1, max=16, help="ivfpq: bits per code")] = 8,
    nprobe: Annotated[int, typer.Option(min=1, help="ivfpq: lists searched (default for searches)")] = 64,
    refine: Annotated[
        int,
        typer.Option(min=0, help="ivfpq: re-score refine x k candidates exactly (vectors on disk; 0: off)"),
    ] = 8,
    hnsw_m: Annotated[int, typer.Option(min=2, help="hnsw: neighbours per node")] = 32,
    pooling: Annotated[str | None, typer.Option(help="dense: mean | cls (default: the model's)")] = None,
    normalize: Annotated[bool | None, typer.Option(help="dense: L2-normalise (default: the model's)")] = None,
    query_prefix: Annotated[str | None, typer.Option(help="dense: e.g. 'query: ' (e5's default)")] = None,
    passage_prefix: Annotated[str | None, typer.Option(help="dense: e.g. 'passage: ' (e5's)")] = None,
    max_length: Annotated[int | None, typer.Option(min=1, help="dense: tokens per passage")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="dense: passages per forward pass")] = 32,
    device: Annotated[str, typer.Option(help="dense: cpu | cuda")] = "cpu",
    embeddings: Annotated[
        str | None, typer.Option(help="dense: embeddings directory (default IDX/embeddings; reused)")
    ] = None,
    workers: Workers = 1,
    pipeline_options: PipelineOptions = None,
    verbose: Verbose = False,
) -> None:
    """Build a BM25 index, or a dense index (Beam encoding job + FAISS); verified, with ramp-manifest.json.

    Beam options of the dense job may also follow ``--`` (e.g. ``-- --runner=FlinkRunner``)."""
    if kind == "lucene":
        manifest = build_index(
            corpus, index, threads=threads, shards=shards, optimize=optimize, overwrite=overwrite
        )
        typer.echo(f"indexed {manifest['documents']} documents into {index} in {manifest['build_seconds']} s")
        return
    if kind != "dense":
        raise typer.BadParameter("--kind must be lucene or dense")
    if encoder is None:
        raise typer.BadParameter("--kind dense needs --encoder (e.g. --encoder minilm)")
    if faiss not in ("flat", "hnsw", "ivfpq") or pooling not in (None, "mean", "cls"):
        raise typer.BadParameter("--faiss must be flat, hnsw or ivfpq and --pooling mean or cls")
    pool: Literal["mean", "cls"] | None = "cls" if pooling == "cls" else "mean" if pooling else None
    spec = resolve_spec(encoder, pool, normalize, query_prefix, passage_prefix, max_length)
    try:
        faiss_spec = FaissSpec.model_validate(
            {"type": faiss, "nlist": nlist, "m": m, "nbits": nbits, "nprobe": nprobe, "refine": refine}
            | {"hnsw_m": hnsw_m}
        )
    except ValueError as err:
        raise ConfigError(" ".join(str(err).split())) from None
    with quiet_logs(embeddings or str(index / EMBEDDINGS_DIR), "dense-index", verbose):
        manifest = build_dense_index(
            corpus,
            index,
            spec,
            faiss_spec,
            embeddings_dir=embeddings,
            workers=workers,
            pipeline_args=beam_args(ctx, pipeline_options),
            num_shards=shards or 4,
            batch_size=batch_size,
            device=device,
            overwrite=overwrite,
        )
    reused = " (embeddings reused)" if manifest["embeddings"]["reused"] else ""
    typer.echo(
        f"indexed {manifest['documents']} passages into {index} ({faiss}, "
        f"{manifest['faiss']['bytes']:,} bytes) in {manifest['build_seconds']} s{reused}"
    )


@index_app.command("info")
def info(index: Annotated[Path, typer.Argument(help="Index directory")]) -> None:
    """Print an index's manifest."""
    typer.echo(json.dumps(read_manifest(index), indent=2))
