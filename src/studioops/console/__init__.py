"""The console: the stack, the database, the files and the backups in a browser, served by the API app.

`studioops.console.auth.login_link(settings)` gives the one-time login link that `studioops console` prints.
"""
