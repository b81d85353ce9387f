#!/usr/bin/env node
// Example paperfetch client in Node.js: submit a batch, watch it to completion, print the result.
//
// It shows that any gRPC client can drive the coordinator: @grpc/proto-loader reads the
// repository's proto/ folder at run time, so nothing generated is committed.
//
//   cd examples/node && npm ci
//   node examples/node/client.js --addr 127.0.0.1:7400 --batch-id node-demo \
//       http://127.0.0.1:7480/pdf/1 'http://127.0.0.1:7480/pdf/2?size=100000'
//
// Each URL becomes one paper, with the id BATCH_ID-N (N counts from 0). The client prints one
// line per WatchBatch message, then one line per paper, and exits 0 only when every paper
// succeeded. A bearer token, if the coordinator asks for one, is read from $PAPERFETCH_TOKEN.
'use strict';

const path = require('node:path');
const { parseArgs } = require('node:util');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_ROOT = path.resolve(__dirname, '..', '..', 'proto');

function loadCoordinatorService() {
  const def = protoLoader.loadSync('paperfetch/v1/coordinator_service.proto', {
    includeDirs: [PROTO_ROOT],
    keepCase: true, // field names as in the .proto: batch_id, paper_id, ...
    longs: String, // int64 as decimal strings, like grpcurl's JSON
    enums: String, // enum values by name
    defaults: true,
  });
  return grpc.loadPackageDefinition(def).paperfetch.v1.CoordinatorService;
}

// countsLine describes a batch on one line: its state and the non-zero paper counts.
function countsLine(batch) {
  const counts = Object.entries(batch.counts || {})
    .filter(([, v]) => v !== '0')
    .map(([k, v]) => `${k}=${v}`);
  const state = batch.state.replace(/^BATCH_STATE_/, '');
  return `batch ${batch.batch_id} ${state} ${counts.join(' ')} bytes=${batch.bytes_downloaded}`;
}

// call turns a unary call into a promise.
function call(client, method, req, metadata) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + 30_000);
    client[method](req, metadata, { deadline }, (err, resp) => (err ? reject(err) : resolve(resp)));
  });
}

// watch follows a batch until the server ends the stream; it resolves to the last batch seen.
function watch(client, batchId, metadata) {
  return new Promise((resolve, reject) => {
    let last = null;
    const stream = client.WatchBatch({ batch_id: batchId }, metadata);
    stream.on('data', (msg) => {
      last = msg.batch;
      console.log(countsLine(last));
    });
    stream.on('error', reject);
    stream.on('end', () => resolve(last));
  });
}

async function main() {
  const { values, positionals } = parseArgs({
    options: {
      addr: { type: 'string', default: '127.0.0.1:7400' },
      'batch-id': { type: 'string', default: 'node-demo' },
    },
    allowPositionals: true,
  });
  if (positionals.length === 0) {
    console.error('usage: client.js [--addr HOST:PORT] [--batch-id ID] URL...');
    return 2;
  }
  const batchId = values['batch-id'];
  const metadata = new grpc.Metadata();
  if (process.env.PAPERFETCH_TOKEN) {
    metadata.set('authorization', `Bearer ${process.env.PAPERFETCH_TOKEN}`);
  }

  const CoordinatorService = loadCoordinatorService();
  const client = new CoordinatorService(values.addr, grpc.credentials.createInsecure());
  try {
    const papers = positionals.map((url, i) => ({ paper_id: `${batchId}-${i}`, urls: [url] }));
    const resp = await call(client, 'SubmitBatch', { batch_id: batchId, papers }, metadata);
    console.log(`submitted batch ${resp.batch_id} (${papers.length} papers, created=${resp.created})`);

    const last = await watch(client, resp.batch_id, metadata);
    if (!last || last.state !== 'BATCH_STATE_COMPLETED') {
      console.error('watch ended before the batch completed');
      return 1;
    }

    let ok = true;
    let pageToken = '';
    do {
      const page = await call(
        client,
        'ListPapers',
        { batch_id: resp.batch_id, page_size: 1000, page_token: pageToken },
        metadata,
      );
      for (const p of page.papers) {
        const state = p.state.replace(/^PAPER_STATE_/, '');
        ok = ok && p.state === 'PAPER_STATE_SUCCEEDED';
        const detail = p.sha256 ? `sha256=${p.sha256} size=${p.size}` : `error=${JSON.stringify(p.last_error)}`;
        console.log(`paper ${p.spec.paper_id} ${state} ${detail}`);
      }
      pageToken = page.next_page_token;
    } while (pageToken);
    return ok ? 0 : 1;
  } finally {
    client.close();
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    console.error(`rpc failed: ${err.code !== undefined ? grpc.status[err.code] + ': ' + err.details : err}`);
    process.exitCode = 1;
  },
);
