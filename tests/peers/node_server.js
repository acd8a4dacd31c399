#!/usr/bin/env node
// WebSocket peer for stream-tungstenite's interop tests, built on the Node `ws` package (v8).
//
// Usage:
//   node_server.js --mode MODE [--n N] [--status CODE] [--retry-after SECS]
//                  [--close-code CODE] [--cert PEM --key PEM]
//
// Same command line and behaviour as python_server.py (see there for the full description):
// binds 127.0.0.1 on an ephemeral port, prints `PORT <number>` once listening, serves until killed or
// until stdin reaches EOF; modes echo, drop, reject, close; --cert/--key switch to wss. One line per
// event on stderr: `connect`, `message <text>`, `drop`, `reject <status>`, `close <code>` (plus
// `disconnect <code>` when a connection ends).
'use strict';

const fs = require('fs');
const http = require('http');
const https = require('https');
const { WebSocketServer } = require('ws');

const MAX_PAYLOAD = 64 * 1024 * 1024;
const LOG_LIMIT = 200; // longer text messages are logged truncated (as python_server.py does)

function usage(message) {
  process.stderr.write(
    `${message}\nusage: node_server.js --mode echo|drop|reject|close [--n N] [--status CODE] ` +
      `[--retry-after SECS] [--close-code CODE] [--cert PEM --key PEM]\n`,
  );
  process.exit(2);
}

function parseArgs(argv) {
  const args = { mode: null, n: 1, status: 503, retryAfter: null, closeCode: 1012, cert: null, key: null };
  const names = {
    '--mode': 'mode',
    '--n': 'n',
    '--status': 'status',
    '--retry-after': 'retryAfter',
    '--close-code': 'closeCode',
    '--cert': 'cert',
    '--key': 'key',
  };
  for (let i = 0; i < argv.length; i++) {
    let flag = argv[i];
    let value;
    const eq = flag.indexOf('=');
    if (eq > 0) {
      value = flag.slice(eq + 1);
      flag = flag.slice(0, eq);
    } else {
      value = argv[++i];
    }
    const name = names[flag];
    if (name === undefined) usage(`unknown argument: ${flag}`);
    if (value === undefined) usage(`missing value for ${flag}`);
    args[name] = value;
  }
  if (!['echo', 'drop', 'reject', 'close'].includes(args.mode)) usage(`bad or missing --mode: ${args.mode}`);
  for (const name of ['n', 'status', 'closeCode']) {
    const number = Number(args[name]);
    if (!Number.isInteger(number) || number < 0) usage(`bad --${name}: ${args[name]}`);
    args[name] = number;
  }
  if ((args.cert === null) !== (args.key === null)) usage('--cert and --key go together');
  return args;
}

function log(line) {
  process.stderr.write(`${line}\n`);
}

function describe(data, isBinary) {
  if (isBinary) return `[binary ${data.length} bytes]`;
  let text = data.toString('utf8');
  if (text.length > LOG_LIMIT) {
    const head = Array.from(text.slice(0, 2 * LOG_LIMIT));
    if (head.length > LOG_LIMIT) text = `${head.slice(0, LOG_LIMIT).join('')}... [${data.length} bytes]`;
  }
  return text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/\r/g, '\\r');
}

const args = parseArgs(process.argv.slice(2));

// Die with the test that started us: exit when stdin reaches EOF.
process.stdin.on('data', () => {});
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();

function rejectionBody() {
  return `rejected: ${args.status} ${http.STATUS_CODES[args.status] || ''}\n`;
}

function rejectionHeaders(body) {
  const headers = {
    'Content-Type': 'text/plain; charset=utf-8',
    'Content-Length': String(Buffer.byteLength(body)),
    Connection: 'close',
  };
  if (args.retryAfter !== null) headers['Retry-After'] = String(args.retryAfter);
  return headers;
}

// Plain HTTP requests (no upgrade): in reject mode answer with the rejection too, otherwise 426.
function onRequest(req, res) {
  if (args.mode === 'reject') {
    const body = rejectionBody();
    log(`reject ${args.status}`);
    res.writeHead(args.status, rejectionHeaders(body));
    res.end(body);
    return;
  }
  const body = 'WebSocket endpoint: upgrade required\n';
  res.writeHead(426, { 'Content-Type': 'text/plain', 'Content-Length': String(body.length), Upgrade: 'websocket' });
  res.end(body);
}

const server = args.cert
  ? https.createServer({ cert: fs.readFileSync(args.cert), key: fs.readFileSync(args.key) }, onRequest)
  : http.createServer(onRequest);

const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_PAYLOAD, perMessageDeflate: false });

// We handle the upgrade ourselves so that a rejection is a raw HTTP response written to the socket, with
// exactly the headers we want (Retry-After included); ws's own abortHandshake() cannot add headers.
server.on('upgrade', (req, socket, head) => {
  socket.on('error', () => {});
  if (args.mode === 'reject') {
    const body = rejectionBody();
    const headers = rejectionHeaders(body);
    const lines = [`HTTP/1.1 ${args.status} ${http.STATUS_CODES[args.status] || 'Unknown'}`];
    for (const [name, value] of Object.entries(headers)) lines.push(`${name}: ${value}`);
    log(`reject ${args.status}`);
    socket.end(`${lines.join('\r\n')}\r\n\r\n${body}`);
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
});

let connections = 0;

wss.on('connection', (ws) => {
  connections += 1;
  log('connect');
  let received = 0;
  let done = false;

  ws.on('error', (err) => log(`log ERROR ${err.message}`));
  ws.on('close', (code) => log(`disconnect ${code}`));

  const sendClose = () => {
    done = true;
    log(`close ${args.closeCode}`);
    ws.close(args.closeCode, 'restart');
  };

  if (args.mode === 'close' && args.n === 0) {
    sendClose();
    return;
  }

  ws.on('message', (data, isBinary) => {
    if (done) return;
    log(`message ${describe(data, isBinary)}`);
    received += 1;
    switch (args.mode) {
      case 'echo':
        ws.send(data, { binary: isBinary });
        break;
      case 'drop':
        if (args.n > 0 && received >= args.n) {
          done = true;
          // Terminate once the echo has been handed to the socket: no Close frame, just a dead TCP connection.
          ws.send(data, { binary: isBinary }, () => {
            log('drop');
            ws.terminate();
          });
        } else {
          ws.send(data, { binary: isBinary });
        }
        break;
      case 'close':
        if (received >= args.n) sendClose();
        break;
      default:
        break;
    }
  });
});

server.on('tlsClientError', (err) => log(`log WARNING tls: ${err.message}`));
server.on('clientError', (err, socket) => {
  log(`log WARNING http: ${err.message}`);
  socket.destroy();
});

server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`PORT ${server.address().port}\n`);
});
