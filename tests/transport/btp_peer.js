// A BTP peer made of the published JavaScript stack (ilp-plugin-btp 1.5.0, ilp-packet),
// driven by test_transport_interop_js.py.  One JSON object per stdout line.
//
//   node btp_peer.js client <btp+ws url> <prepare hex>   we dial the connector
//   node btp_peer.js server <port> <secret> <prepare hex> the connector dials us
//
// Either way: connect, then (concurrently) send the given Prepare with sendData and
// answer one incoming Prepare with a Fulfill; report both, disconnect, exit.
'use strict'
const BtpPlugin = require('ilp-plugin-btp')
const IlpPacket = require('ilp-packet')

const [mode, where, third, fourth] = process.argv.slice(2)
const say = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')

const options = mode === 'client'
  ? { server: where, reconnectInterval: 100 }
  : { listener: { port: Number(where), secret: third } }
const prepareHex = mode === 'client' ? third : fourth
const plugin = new BtpPlugin(options)

let handled
const handledOnce = new Promise((resolve) => { handled = resolve })
plugin.registerDataHandler(async (data) => {
  say({ event: 'prepare', hex: data.toString('hex') })
  handled()
  return IlpPacket.serializeIlpFulfill({ fulfillment: Buffer.alloc(32, 7), data: Buffer.from('from js') })
})

async function main () {
  setTimeout(() => { say({ event: 'timeout' }); process.exit(2) }, 20000).unref()
  if (mode === 'server') say({ event: 'listening' })
  const connected = plugin.connect()
  await connected
  say({ event: 'connected' })
  const reply = await plugin.sendData(Buffer.from(prepareHex, 'hex'))
  say({ event: 'reply', hex: reply.toString('hex') })
  await handledOnce
  await new Promise((resolve) => setTimeout(resolve, 100)) // let the Fulfill go out
  await plugin.disconnect()
  say({ event: 'done' })
  process.exit(0)
}

main().catch((err) => { say({ event: 'error', message: String(err && err.stack || err) }); process.exit(1) })
