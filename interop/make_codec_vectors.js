#!/usr/bin/env node
// Writes tests/codec/vectors.json: byte encodings made by the reference
// JavaScript packages (ilp-packet, oer-utils, btp-packet, ilp-protocol-ildcp)
// next to the field values they were made from.  The Python codec tests
// decode every vector and re-encode its fields, so both directions are
// checked against the JavaScript encoders.
//
// Usage (from interop/): npm ci && node make_codec_vectors.js
'use strict'

const crypto = require('crypto')
const fs = require('fs')
const path = require('path')

const IlpPacket = require('ilp-packet')
const Ildcp = require('ilp-protocol-ildcp')
const Btp = require('btp-packet')
const { Writer, Reader } = require('oer-utils')

const OUTPUT = path.join(__dirname, '..', 'tests', 'codec', 'vectors.json')
const PACKAGES = ['ilp-packet', 'oer-utils', 'btp-packet', 'ilp-protocol-ildcp']

function installedVersion (name) {
  const manifest = path.join(__dirname, 'node_modules', name, 'package.json')
  return JSON.parse(fs.readFileSync(manifest, 'utf8')).version
}

// Deterministic bytes so that regenerating gives the same file.
function pseudoRandomBytes (seed, length) {
  const chunks = []
  for (let counter = 0; chunks.length * 32 < length; counter++) {
    chunks.push(crypto.createHash('sha256').update(`${seed}:${counter}`).digest())
  }
  return Buffer.concat(chunks).subarray(0, length)
}

const hex = (buffer) => Buffer.from(buffer).toString('hex')

function addressOfLength (length) {
  // 'g' plus '.segment' pieces, padded so the total is exactly `length`.
  let address = 'g'
  let index = 0
  while (address.length < length) {
    const room = length - address.length - 1
    const segment = `s${index++}-~_`.repeat(8).slice(0, Math.min(room, 40))
    address += '.' + segment
  }
  return address
}

// --- OER ---------------------------------------------------------------------

function lengthPrefixVectors () {
  const lengths = [0, 1, 127, 128, 255, 256, 65535, 65536, 16777215, 16777216]
  return lengths.map((length) => {
    const writer = new Writer()
    writer.writeVarOctetString(Buffer.alloc(length))
    const encoded = writer.getBuffer()
    return { length, hex: hex(encoded.subarray(0, encoded.length - length)) }
  })
}

function varUintVectors () {
  const values = ['0', '1', '127', '128', '255', '256', '65535', '65536',
    '4294967295', '4294967296', '9007199254740993', '18446744073709551615']
  return values.map((value) => {
    const writer = new Writer()
    writer.writeVarUInt(value)
    return { value, hex: hex(writer.getBuffer()) }
  })
}

// Length prefixes that oer-utils refuses to read (its Reader is canonical).
function rejectedLengthPrefixVectors () {
  const candidates = ['80', '8100', '817f', '820080', '82007f', '8200ff00',
    '830000ff', '88000000000000000080']
  return candidates
    .filter((candidate) => {
      try {
        new Reader(Buffer.from(candidate, 'hex')).readLengthPrefix()
        return false
      } catch (error) {
        return true
      }
    })
    .map((candidate) => ({ hex: candidate }))
}

// --- ILP ---------------------------------------------------------------------

function prepareVector (name, fields) {
  const encoded = IlpPacket.serializeIlpPrepare({
    amount: fields.amount,
    expiresAt: new Date(fields.expiresAt),
    executionCondition: fields.executionCondition,
    destination: fields.destination,
    data: fields.data
  })
  const decoded = IlpPacket.deserializeIlpPrepare(encoded)
  return {
    name,
    hex: hex(encoded),
    amount: decoded.amount,
    expires_at: decoded.expiresAt.toISOString(),
    execution_condition: hex(decoded.executionCondition),
    destination: decoded.destination,
    data: hex(decoded.data)
  }
}

function prepareVectors () {
  const condition = pseudoRandomBytes('condition', 32)
  const base = {
    amount: '107',
    expiresAt: '2017-12-23T01:21:40.549Z',
    executionCondition: condition,
    destination: 'example.alice',
    data: Buffer.alloc(0)
  }
  return [
    prepareVector('zero amount, empty data', { ...base, amount: '0' }),
    prepareVector('small', { ...base, data: Buffer.from('hello, world') }),
    prepareVector('max amount', { ...base, amount: '18446744073709551615' }),
    prepareVector('amount above 2^53', { ...base, amount: '9007199254740993' }),
    prepareVector('data 127 bytes', { ...base, data: pseudoRandomBytes('d127', 127) }),
    prepareVector('data 128 bytes', { ...base, data: pseudoRandomBytes('d128', 128) }),
    prepareVector('data 32767 bytes', { ...base, data: pseudoRandomBytes('dmax', 32767) }),
    prepareVector('address 200 bytes', { ...base, destination: addressOfLength(200) }),
    prepareVector('address 1023 bytes', { ...base, destination: addressOfLength(1023) }),
    prepareVector('midnight, year 9999', { ...base, expiresAt: '9999-12-31T00:00:00.000Z' }),
    prepareVector('leap day', { ...base, expiresAt: '2024-02-29T23:59:59.999Z' }),
    prepareVector('peer address', { ...base, destination: 'peer.route.control' }),
    prepareVector('test scheme', { ...base, destination: 'test3.Bob_~-9' })
  ]
}

function fulfillVectors () {
  const cases = [
    ['empty data', pseudoRandomBytes('f1', 32), Buffer.alloc(0)],
    ['small data', pseudoRandomBytes('f2', 32), Buffer.from('thank you')],
    ['zero fulfillment', Buffer.alloc(32), pseudoRandomBytes('f3', 300)],
    ['data 32767 bytes', pseudoRandomBytes('f4', 32), pseudoRandomBytes('f4d', 32767)]
  ]
  return cases.map(([name, fulfillment, data]) => {
    const encoded = IlpPacket.serializeIlpFulfill({ fulfillment, data })
    return { name, hex: hex(encoded), fulfillment: hex(fulfillment), data: hex(data) }
  })
}

function rejectVector (name, reject) {
  const encoded = IlpPacket.serializeIlpReject(reject)
  const decoded = IlpPacket.deserializeIlpReject(encoded)
  return {
    name,
    hex: hex(encoded),
    code: decoded.code,
    triggered_by: decoded.triggeredBy,
    message: decoded.message,
    data: hex(decoded.data)
  }
}

function rejectVectors () {
  const vectors = Object.entries(IlpPacket.Errors.codes).map(([key, code]) =>
    rejectVector(`code ${key}`, {
      code,
      triggeredBy: 'g.connector.' + code.toLowerCase(),
      message: `rejected with ${key}`,
      data: code === 'F99' ? Buffer.from('app data') : Buffer.alloc(0)
    }))
  vectors.push(rejectVector('empty triggeredBy', {
    code: 'T00', triggeredBy: '', message: '', data: Buffer.alloc(0)
  }))
  vectors.push(rejectVector('unicode message, large data', {
    code: 'F99',
    triggeredBy: addressOfLength(300),
    message: 'Zahlung abgelehnt: Überweisung 💸',
    data: pseudoRandomBytes('rdata', 2000)
  }))
  return vectors
}

function amountTooLargeVectors () {
  const cases = [['1000', '999'], ['18446744073709551615', '0'], ['9007199254740993', '1']]
  return cases.map(([receivedAmount, maximumAmount]) => {
    const error = new IlpPacket.Errors.AmountTooLargeError('too much', { receivedAmount, maximumAmount })
    const reject = IlpPacket.errorToReject('g.connector', error)
    return {
      received_amount: receivedAmount,
      maximum_amount: maximumAmount,
      data: hex(error.ilpErrorData),
      reject_hex: hex(reject)
    }
  })
}

// --- BTP ---------------------------------------------------------------------

function protocolDataJson (entries) {
  return entries.map((entry) => ({
    name: entry.protocolName,
    content_type: entry.contentType,
    data: hex(entry.data)
  }))
}

function btpVector (name, packet) {
  const encoded = Btp.serialize(packet)
  const decoded = Btp.deserialize(encoded)
  const vector = {
    name,
    hex: hex(encoded),
    type: decoded.type,
    request_id: decoded.requestId,
    protocol_data: protocolDataJson(decoded.data.protocolData)
  }
  if (packet.type === Btp.TYPE_TRANSFER) vector.amount = decoded.data.amount
  if (packet.type === Btp.TYPE_ERROR) {
    vector.code = decoded.data.code
    vector.error_name = decoded.data.name
    vector.triggered_at = decoded.data.triggeredAt.toISOString()
    vector.data = hex(Buffer.from(decoded.data.data, 'utf8'))
  }
  return vector
}

function authProtocolData (username, token) {
  return [
    { protocolName: 'auth', contentType: Btp.MIME_APPLICATION_OCTET_STREAM, data: Buffer.alloc(0) },
    { protocolName: 'auth_username', contentType: Btp.MIME_TEXT_PLAIN_UTF8, data: Buffer.from(username, 'utf8') },
    { protocolName: 'auth_token', contentType: Btp.MIME_TEXT_PLAIN_UTF8, data: Buffer.from(token, 'utf8') }
  ]
}

const ilpEntry = (packet) =>
  ({ protocolName: 'ilp', contentType: Btp.MIME_APPLICATION_OCTET_STREAM, data: packet })

function btpVectors () {
  const prepare = IlpPacket.serializeIlpPrepare({
    amount: '5000',
    expiresAt: new Date('2018-06-07T20:48:42.483Z'),
    executionCondition: pseudoRandomBytes('btp-condition', 32),
    destination: 'g.bob.~stream.abc',
    data: pseudoRandomBytes('btp-data', 200)
  })
  const fulfill = IlpPacket.serializeIlpFulfill({
    fulfillment: pseudoRandomBytes('btp-fulfillment', 32), data: Buffer.alloc(0)
  })
  const manyEntries = Array.from({ length: 300 }, (_, index) => ({
    protocolName: `side${index}`, contentType: index % 3, data: Buffer.from([index & 0xff])
  }))
  return [
    btpVector('auth message', {
      type: Btp.TYPE_MESSAGE, requestId: 1, data: { protocolData: authProtocolData('alice', 's3cr3t') }
    }),
    btpVector('auth message, empty username', {
      type: Btp.TYPE_MESSAGE, requestId: 0x7fffffff, data: { protocolData: authProtocolData('', 'tok') }
    }),
    btpVector('auth response', { type: Btp.TYPE_RESPONSE, requestId: 1, data: { protocolData: [] } }),
    btpVector('ilp prepare message', {
      type: Btp.TYPE_MESSAGE, requestId: 4294967295, data: { protocolData: [ilpEntry(prepare)] }
    }),
    btpVector('ilp fulfill response', {
      type: Btp.TYPE_RESPONSE, requestId: 0, data: { protocolData: [ilpEntry(fulfill)] }
    }),
    btpVector('message with json and text entries', {
      type: Btp.TYPE_MESSAGE,
      requestId: 77,
      data: {
        protocolData: [
          { protocolName: 'info', contentType: Btp.MIME_APPLICATION_JSON, data: Buffer.from('{"a":1}') },
          { protocolName: 'note', contentType: Btp.MIME_TEXT_PLAIN_UTF8, data: Buffer.from('héllo') }
        ]
      }
    }),
    btpVector('message with 300 entries', {
      type: Btp.TYPE_MESSAGE, requestId: 300, data: { protocolData: manyEntries }
    }),
    btpVector('transfer', {
      type: Btp.TYPE_TRANSFER,
      requestId: 9,
      data: {
        amount: '18446744073709551615',
        protocolData: [{ protocolName: 'claim', contentType: Btp.MIME_APPLICATION_JSON, data: Buffer.from('{"sig":"x"}') }]
      }
    }),
    btpVector('transfer, zero, no protocol data', {
      type: Btp.TYPE_TRANSFER, requestId: 10, data: { amount: '0', protocolData: [] }
    }),
    btpVector('error', {
      type: Btp.TYPE_ERROR,
      requestId: 2,
      data: {
        code: 'F00',
        name: 'NotAcceptedError',
        triggeredAt: '2017-12-24T16:14:32.279Z',
        data: 'invalid auth_token',
        protocolData: []
      }
    }),
    btpVector('error with whole-second time and protocol data', {
      type: Btp.TYPE_ERROR,
      requestId: 3,
      data: {
        code: 'T00',
        name: 'UnreachableError',
        triggeredAt: '2020-01-01T00:00:00.000Z',
        data: '',
        protocolData: [ilpEntry(fulfill)]
      }
    }),
    btpVector('message with large ilp packet', {
      type: Btp.TYPE_MESSAGE,
      requestId: 12,
      data: {
        protocolData: [ilpEntry(IlpPacket.serializeIlpPrepare({
          amount: '1',
          expiresAt: new Date('2030-05-05T05:05:05.005Z'),
          executionCondition: Buffer.alloc(32, 7),
          destination: 'g.big',
          data: pseudoRandomBytes('btp-big', 32767)
        }))]
      }
    })
  ]
}

// --- ILDCP -------------------------------------------------------------------

function ildcpRequestVectors () {
  return ['2018-01-01T00:00:30.000Z', '2030-07-15T12:34:56.789Z'].map((expiresAt) => ({
    hex: hex(Ildcp.serializeIldcpRequest({ expiresAt: new Date(expiresAt) })),
    expires_at: expiresAt
  }))
}

function ildcpResponseVectors () {
  const cases = [
    { clientAddress: 'g.parent.child', assetScale: 9, assetCode: 'XRP' },
    { clientAddress: 'test.x', assetScale: 0, assetCode: '' },
    { clientAddress: addressOfLength(150), assetScale: 255, assetCode: '€uro' }
  ]
  return cases.map((response) => {
    const encoded = Ildcp.serializeIldcpResponse(response)
    const decoded = Ildcp.deserializeIldcpResponse(encoded)
    return {
      hex: hex(encoded),
      client_address: decoded.clientAddress,
      asset_scale: decoded.assetScale,
      asset_code: decoded.assetCode
    }
  })
}

function main () {
  const packages = Object.fromEntries(PACKAGES.map((name) => [name, installedVersion(name)]))
  const vectors = {
    _comment: 'Generated by interop/make_codec_vectors.js with the npm packages listed ' +
      'below; regenerate instead of editing by hand.',
    generator: 'interop/make_codec_vectors.js',
    packages,
    node: process.version,
    oer_length_prefixes: lengthPrefixVectors(),
    oer_rejected_length_prefixes: rejectedLengthPrefixVectors(),
    oer_var_uints: varUintVectors(),
    ilp_prepares: prepareVectors(),
    ilp_fulfills: fulfillVectors(),
    ilp_rejects: rejectVectors(),
    ilp_amount_too_large: amountTooLargeVectors(),
    btp_frames: btpVectors(),
    ildcp_requests: ildcpRequestVectors(),
    ildcp_responses: ildcpResponseVectors()
  }
  fs.mkdirSync(path.dirname(OUTPUT), { recursive: true })
  fs.writeFileSync(OUTPUT, JSON.stringify(vectors, null, 1) + '\n')
  const count = Object.values(vectors).filter(Array.isArray).reduce((sum, list) => sum + list.length, 0)
  console.log(`wrote ${count} vectors to ${path.relative(process.cwd(), OUTPUT)}`)
}

main()
