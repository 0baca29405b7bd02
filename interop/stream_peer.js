'use strict'
// STREAM (RFC-0029) endpoints from the published `ilp-protocol-stream`, over
// `ilp-plugin-btp`, driven by the Python test suite. JSON lines on stdout.
//
//   node stream_peer.js server --url btp+ws://bob:secret@127.0.0.1:7768
//     -> {"destination": ..., "sharedSecret": base64}, then {"received": n} as money arrives
//   node stream_peer.js client --url ... --destination D --secret B64 --amount N
//     -> {"sent": n, "delivered": m}
const BtpPlugin = require('ilp-plugin-btp')
const { createServer, createConnection, DataAndMoneyStream } = require('ilp-protocol-stream')

// ilp-protocol-stream 2.7.1 assigns `this.closed`, which Node >= 18 defines on Duplex as
// a getter only (upstream issue #284): give the class a settable property of its own.
if (DataAndMoneyStream) {
  Object.defineProperty(DataAndMoneyStream.prototype, 'closed', {
    configurable: true,
    get () { return this._interopClosed || false },
    set (value) { this._interopClosed = value }
  })
}

const parseArgs = require('./cli_args')
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')

async function server (args) {
  const plugin = new BtpPlugin({ server: args.url })
  const server = await createServer({ plugin })
  const { destinationAccount, sharedSecret } = server.generateAddressAndSecret()
  let received = 0n
  server.on('connection', (connection) => {
    connection.on('stream', (stream) => {
      stream.setReceiveMax(args['receive-max'] || '1000000000000')
      stream.on('money', (amount) => {
        received += BigInt(amount)
        emit({ received: received.toString() })
      })
    })
  })
  emit({ destination: destinationAccount, sharedSecret: sharedSecret.toString('base64') })
  process.stdin.resume()
  process.stdin.on('end', async () => { await server.close(); process.exit(0) })
}

async function client (args) {
  const plugin = new BtpPlugin({ server: args.url })
  const connection = await createConnection({
    plugin,
    destinationAccount: args.destination,
    sharedSecret: Buffer.from(args.secret, 'base64')
  })
  const stream = connection.createStream()
  await stream.sendTotal(args.amount, { timeout: Number(args['timeout-ms'] || 20000) })
  emit({ sent: stream.totalSent, delivered: connection.totalDelivered, sourceAccount: connection.sourceAccount })
  await connection.end()
  process.exit(0)
}

const args = parseArgs(process.argv.slice(2))
const mode = { server, client }[args._[0]]
if (!mode) { console.error('usage: stream_peer.js server|client --url URL ...'); process.exit(2) }
mode(args).catch((err) => { emit({ error: String(err && err.stack || err) }); process.exit(1) })
