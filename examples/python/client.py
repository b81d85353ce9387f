#!/usr/bin/env python3
"""Example paperfetch client in Python: submit a batch, watch it to completion, print the result.

It shows that any gRPC client can drive the coordinator: the stubs are generated at run time from
the repository's proto/ folder with grpc_tools.protoc into a temporary folder, so nothing
generated is committed. Needs grpcio and grpcio-tools (Debian: python3-grpcio python3-grpc-tools).

    python3 examples/python/client.py --addr 127.0.0.1:7400 --batch-id py-demo \
        http://127.0.0.1:7480/pdf/1 http://127.0.0.1:7480/pdf/2?size=100000

Each URL becomes one paper, with the id BATCH_ID-N (N counts from 0). The client prints one line
per WatchBatch message, then one line per paper, and exits 0 only when every paper succeeded.
A bearer token, if the coordinator asks for one, is read from $PAPERFETCH_TOKEN.
"""

import argparse
import importlib
import os
import pathlib
import sys
import tempfile

import grpc
import grpc_tools
from grpc_tools import protoc

PROTO_ROOT = pathlib.Path(__file__).resolve().parent.parent.parent / "proto"


def load_stubs(out_dir):
    """Generates the Python modules of proto/paperfetch/v1 into out_dir and imports them."""
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    files = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.glob("paperfetch/v1/*.proto"))
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            *files,
        ]
    )
    if rc != 0:
        raise SystemExit(f"protoc failed ({rc}) on {PROTO_ROOT}")
    sys.path.insert(0, out_dir)
    pb = importlib.import_module("paperfetch.v1.coordinator_service_pb2")
    paper_pb = importlib.import_module("paperfetch.v1.paper_pb2")
    rpc = importlib.import_module("paperfetch.v1.coordinator_service_pb2_grpc")
    return pb, paper_pb, rpc


def counts_line(pb, batch):
    """One line describing a batch: its state and the non-zero paper counts."""
    state = pb.BatchState.Name(batch.state).removeprefix("BATCH_STATE_")
    counts = [f"{f.name}={v}" for f, v in batch.counts.ListFields() if v]
    return f"batch {batch.batch_id} {state} {' '.join(counts)} bytes={batch.bytes_downloaded}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--addr", default="127.0.0.1:7400", help="coordinator gRPC address")
    ap.add_argument("--batch-id", default="py-demo", help="batch id (resubmitting the same batch is idempotent)")
    ap.add_argument("urls", nargs="+", help="one URL per paper")
    args = ap.parse_args()

    metadata = []
    if os.environ.get("PAPERFETCH_TOKEN"):
        metadata.append(("authorization", "Bearer " + os.environ["PAPERFETCH_TOKEN"]))

    with tempfile.TemporaryDirectory(prefix="paperfetch-py-") as tmp:
        pb, paper_pb, rpc = load_stubs(tmp)
        with grpc.insecure_channel(args.addr) as channel:
            stub = rpc.CoordinatorServiceStub(channel)
            papers = [
                paper_pb.PaperSpec(paper_id=f"{args.batch_id}-{i}", urls=[u]) for i, u in enumerate(args.urls)
            ]
            resp = stub.SubmitBatch(
                pb.SubmitBatchRequest(batch_id=args.batch_id, papers=papers), metadata=metadata, timeout=30
            )
            print(f"submitted batch {resp.batch_id} ({len(papers)} papers, created={resp.created})", flush=True)

            last = None
            for msg in stub.WatchBatch(pb.WatchBatchRequest(batch_id=resp.batch_id), metadata=metadata):
                last = msg.batch
                print(counts_line(pb, last), flush=True)
            if last is None or last.state != pb.BATCH_STATE_COMPLETED:
                print("watch ended before the batch completed", file=sys.stderr)
                return 1

            ok = True
            req = pb.ListPapersRequest(batch_id=resp.batch_id, page_size=1000)
            while True:
                page = stub.ListPapers(req, metadata=metadata, timeout=30)
                for p in page.papers:
                    state = paper_pb.PaperState.Name(p.state).removeprefix("PAPER_STATE_")
                    ok = ok and p.state == paper_pb.PAPER_STATE_SUCCEEDED
                    detail = f"sha256={p.sha256} size={p.size}" if p.sha256 else f"error={p.last_error!r}"
                    print(f"paper {p.spec.paper_id} {state} {detail}")
                if not page.next_page_token:
                    break
                req.page_token = page.next_page_token
            return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except grpc.RpcError as err:
        print(f"rpc failed: {err.code().name}: {err.details()}", file=sys.stderr)
        sys.exit(1)
