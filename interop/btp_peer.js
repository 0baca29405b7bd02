'use strict'
// A BTP peer built from the published JavaScript Interledger packages, driven by the
// Python test suite: `receive` fulfils (or rejects) what reaches it, `send` sends
// Prepares and reports every answer. All output is JSON lines on stdout.
//
//   node btp_peer.js receive --url btp+ws://bob:secret@127.0.0.1:7768
//   node btp_peer.js send --url btp+ws://alice:secret@127.0.0.1:7768 --destination g.c.bob --count 10 --amount 5
//
// The receiver fulfils a packet whose data does not start with "reject"; its fulfillment
// is sha256("interop:" + data), which the sender can compute too. The Fulfill's data
// echoes what arrived (amount, destination, data), so the sender checks it end to end.
const crypto = require('crypto')
const BtpPlugin = require('ilp-plugin-btp')
const IlpPacket = require('ilp-packet')
const Ildcp = require('ilp-protocol-ildcp')

const sha256 = (b) => crypto.createHash('sha256').update(b).digest()
const fulfillmentFor = (data) => sha256(Buffer.concat([Buffer.from('interop:'), data]))
const parseArgs = require('./cli_args')
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')

async function connect (url) {
  const plugin = new BtpPlugin({ server: url })
  await plugin.connect()
  return plugin
}

async function ildcp (plugin) {
  try {
    const info = await Ildcp.fetch(plugin.sendData.bind(plugin))
    return { address: info.clientAddress, assetCode: info.assetCode, assetScale: info.assetScale }
  } catch (err) {
    return { ildcpError: String(err && err.message) }
  }
}

async function receive (args) {
  const plugin = await connect(args.url)
  plugin.registerDataHandler(async (packet) => {
    const prepare = IlpPacket.deserializeIlpPrepare(packet)
    if (prepare.data.toString().startsWith('reject')) {
      return IlpPacket.serializeIlpReject({
        code: 'F99',
        triggeredBy: args.address || 'test.receiver',
        message: 'rejected on request',
        data: Buffer.from(prepare.data)
      })
    }
    const fulfillment = fulfillmentFor(prepare.data)
    return IlpPacket.serializeIlpFulfill({
      fulfillment,
      data: Buffer.from(JSON.stringify({
        amount: prepare.amount,
        destination: prepare.destination,
        data: prepare.data.toString('hex')
      }))
    })
  })
  emit({ ready: true, ...(args.ildcp ? await ildcp(plugin) : {}) })
  process.stdin.resume()
  process.stdin.on('end', async () => { await plugin.disconnect(); process.exit(0) })
}

function describe (reply) {
  const type = reply[0]
  if (type === IlpPacket.Type.TYPE_ILP_FULFILL) {
    const fulfill = IlpPacket.deserializeIlpFulfill(reply)
    return { type: 'fulfill', fulfillment: fulfill.fulfillment.toString('hex'), data: fulfill.data.toString() }
  }
  const reject = IlpPacket.deserializeIlpReject(reply)
  return { type: 'reject', code: reject.code, triggeredBy: reject.triggeredBy, message: reject.message, data: reject.data.toString('hex') }
}

async function send (args) {
  const plugin = await connect(args.url)
  const count = Number(args.count || 1)
  const results = []
  for (let i = 0; i < count; i++) {
    const data = Buffer.from(`${args.prefix || 'payment'}-${i}-${crypto.randomBytes(4).toString('hex')}`)
    const prepare = IlpPacket.serializeIlpPrepare({
      amount: String(args.amount || '1'),
      executionCondition: args.condition === 'random' ? crypto.randomBytes(32) : sha256(fulfillmentFor(data)),
      destination: args.destination,
      data,
      expiresAt: new Date(Date.now() + Number(args['expiry-ms'] || 10000))
    })
    const reply = await plugin.sendData(prepare)
    results.push({ sent: { amount: String(args.amount || '1'), destination: args.destination, data: data.toString('hex') }, ...describe(reply) })
  }
  emit({ results })
  await plugin.disconnect()
}

const args = parseArgs(process.argv.slice(2))
const modes = { receive, send }
const mode = modes[args._[0]]
if (!mode) { console.error('usage: btp_peer.js receive|send --url URL ...'); process.exit(2) }
mode(args).catch((err) => { emit({ error: String(err && err.stack || err) }); process.exit(1) })
