"""rtsr-nas commands: the entry points above every layer.

Each module here is one command (`search`, `report`, `export`, `latency`, `train`): it parses flags,
calls the layers below (`reports` -> `nas` -> `trainers` -> `search_space`) and prints. It is the only
package that may import all of them, so, for example, the dashboard is built here after a search,
not by the search driver. `rtsr` (the console script, `rtsr.cli`) and the historical `python -m`
entry points (`nas.run`, `nas.export`, `nas.latency`, `reports`, `trainers.full`) both land here.
"""
