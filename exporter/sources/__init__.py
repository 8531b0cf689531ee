"""Where the counts come from: a Source answers one query per collection.

`source` holds the Source protocol, the failures a collection can meet and the SQL that every
database shares; `mysql` reads MySQL and MariaDB (the one module that imports pymysql) and
`grants` checks its privileges; `sqlite` reads a SQLite file, which `demo` writes and keeps busy.
"""
