"""The web dashboard served at ``/ui``: the tenant's jobs and each job's report, in a browser.

``pages`` has the routes, ``charts`` the geometry of the SVG charts, ``reports`` reads a job's full
engine report; ``templates/`` (Jinja2) and ``static/`` (one script, one stylesheet) ship inside
the package, so the dashboard works offline.
"""
