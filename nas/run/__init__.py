"""`python -m nas.run`: the search command's historical name; the command itself is `rtsr.search`."""
