'use strict'
// `--name value` pairs and positional words, for the interop scripts.
module.exports = function parseArgs (argv) {
  const args = { _: [] }
  for (let i = 0; i < argv.length; i++) {
    if (argv[i].startsWith('--')) args[argv[i].slice(2)] = argv[++i]
    else args._.push(argv[i])
  }
  return args
}
