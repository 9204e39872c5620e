// A real Kubo RPC client (kubo-rpc-client 7.1.0) driving an IPFS API, for
// tests/proxy.rs: node kubo-client.mjs <api url, e.g. http://127.0.0.1:9095>
// Runs add, pin add/ls/rm, repo stat/gc, block put and dag put with pin,
// and prints what it saw as one JSON object on stdout. Any failure of the
// client exits non-zero with the error on stderr.
import { create } from 'kubo-rpc-client'

const url = process.argv[2]
if (!url) {
  console.error('usage: node kubo-client.mjs <api url>')
  process.exit(2)
}
const ipfs = create({ url: `${url}/api/v0` })
const bytes = (s) => new TextEncoder().encode(s)
const out = {}

const added = await ipfs.add({ path: 'kubo-client.txt', content: bytes(`added by kubo-rpc-client ${Date.now()}\n`) })
out.added = added.cid.toString()
out.addedSize = added.size

const unpinned = await ipfs.add(bytes(`pinned later by kubo-rpc-client ${Date.now()}\n`), { pin: false })
out.unpinned = unpinned.cid.toString()
out.pinAdd = (await ipfs.pin.add(unpinned.cid)).toString()

out.pinLs = []
for await (const pin of ipfs.pin.ls({ type: 'recursive' })) {
  out.pinLs.push({ cid: pin.cid.toString(), type: pin.type })
}
out.pinLsOne = []
for await (const pin of ipfs.pin.ls({ paths: [unpinned.cid] })) {
  out.pinLsOne.push({ cid: pin.cid.toString(), type: pin.type })
}
out.pinRm = (await ipfs.pin.rm(unpinned.cid)).toString()

const stat = await ipfs.repo.stat()
out.repoStat = {
  repoSize: stat.repoSize.toString(),
  storageMax: stat.storageMax.toString(),
  numObjects: stat.numObjects.toString()
}

out.block = (await ipfs.block.put(bytes(`block by kubo-rpc-client ${Date.now()}\n`), { format: 'raw', pin: true })).toString()
out.dag = (await ipfs.dag.put({ by: 'kubo-rpc-client', at: Date.now() }, { pin: true })).toString()

out.gc = []
for await (const r of ipfs.repo.gc()) {
  if (r.err) throw r.err
  if (r.cid) out.gc.push(r.cid.toString())
}

console.log(JSON.stringify(out))
