"""The web explorer every node serves, and the paginated REST reads behind it.

`explorer_routes` serves the static single-page app under /explorer/ (files shipped inside this
package, no build step, no CDN); `index_routes` are the REST endpoints it reads (block list, block by
hash, an account's transactions and records, search), which any client may use as well.
"""

from node.api.explorer.rest import index_routes
from node.api.explorer.site import explorer_routes

__all__ = ["explorer_routes", "index_routes"]
