"""HTTP: the aiohttp application (REST, WebSocket event stream, metrics, health), its OpenAPI
document and its JSON errors.

Owns: routing, request parsing and limits, error bodies, the event stream's flow control.
Reaches the node only through `node.service.NodeService` (handed to `make_app`): it never touches
the engine, the store or the network. May import `ledger` (to decode what clients send) and the
node's shared modules (`node.service`, `node.config`, `node.metrics`, `node.logs`); never
`node.core`, `node.net`, `node.node` or `cli`.
"""
