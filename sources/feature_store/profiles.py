"""The PostgreSQL queries behind the profile, catalogue and embedding feature views, written once.

``feature_repo/definitions.py`` reads them as ``PostgreSQLSource`` queries on the postgres
engine; with the spark engine, ``marquee export`` runs the same queries and writes their
results as Parquet (``sources/export/lake.py``), so both engines serve the same rows.
"""

from __future__ import annotations

# Catalogue rows without an added_at (never rated) count as known since this date.
CATALOGUE_EPOCH = "1970-01-01 00:00:00+00"

# A user's profile and plan, known from the moment the subscription started.
USER_PROFILE = """
    SELECT u.id AS user_id, u.age::int AS age, u.gender, u.occupation, u.city,
           t.name AS tier, t.monthly_price::float8 AS monthly_price,
           s.started_at AS event_timestamp, s.started_at AS created_timestamp
    FROM users u
    JOIN subscriptions s ON s.user_id = u.id
    JOIN subscription_tiers t ON t.id = s.tier_id
"""

# Year and genres from the moment the movie entered the catalogue: a second before its first
# rating (movies.added_at), so even that first rating sees its content (profile, embedding).
# genre_multi_hot is ordered by genres.id.
MOVIE_PROFILE = f"""
    SELECT m.id AS movie_id, m.year::int AS year,
           coalesce((SELECT string_agg(g.name, '|' ORDER BY g.id)
                     FROM movie_genres mg JOIN genres g ON g.id = mg.genre_id
                     WHERE mg.movie_id = m.id), '') AS genres,
           ARRAY(SELECT (mg.movie_id IS NOT NULL)::int
                 FROM genres g LEFT JOIN movie_genres mg ON mg.genre_id = g.id AND mg.movie_id = m.id
                 ORDER BY g.id) AS genre_multi_hot,
           coalesce(m.added_at - interval '1 second', TIMESTAMPTZ '{CATALOGUE_EPOCH}') AS event_timestamp,
           coalesce(m.added_at - interval '1 second', TIMESTAMPTZ '{CATALOGUE_EPOCH}') AS created_timestamp
    FROM movies m
"""

# The 384-d title embedding (pgvector → real[]), valid from the movie's catalogue entry (as above).
MOVIE_EMBEDDING = f"""
    SELECT e.movie_id AS movie_id, e.embedding::real[] AS title_embedding,
           coalesce(m.added_at - interval '1 second', TIMESTAMPTZ '{CATALOGUE_EPOCH}') AS event_timestamp,
           coalesce(m.added_at - interval '1 second', TIMESTAMPTZ '{CATALOGUE_EPOCH}') AS created_timestamp
    FROM movie_embeddings e JOIN movies m ON m.id = e.movie_id
"""

#: source name -> query, for the views whose source is a query over the systems of record
QUERY_SOURCES = {
    "user_profile_source": USER_PROFILE,
    "movie_profile_source": MOVIE_PROFILE,
    "movie_embedding_source": MOVIE_EMBEDDING,
}
