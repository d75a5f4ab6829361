"""Every store read and write the API makes: SQL, Cypher and Mongo filters."""
