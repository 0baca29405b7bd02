'use strict'
// Runs the published JavaScript connector (`ilp-connector`) for side-by-side and peering
// tests. Its options come as JSON in the first argument (see the package's README:
// ilpAddress, accounts, routes, ...); prints {"ready": true} once it listens and stops
// when its standard input closes.
const { createApp } = require('ilp-connector')

const options = JSON.parse(process.argv[2] || '{}')
const app = createApp({ env: 'test', backend: 'one-to-one', spread: 0, ...options })
app.listen()
  .then(() => process.stdout.write(JSON.stringify({ ready: true }) + '\n'))
  .catch((err) => { process.stdout.write(JSON.stringify({ error: String(err && err.stack || err) }) + '\n'); process.exit(1) })
process.stdin.resume()
process.stdin.on('end', async () => { await app.shutdown(); process.exit(0) })
