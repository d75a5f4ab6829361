"""The names of Feast objects that code outside ``feature_repo/`` refers to, written once.

``feature_repo/definitions.py`` declares these objects; a test checks that every name here is
one the repository registers.
"""

from __future__ import annotations

#: point-in-time training rows of the engagement net (``get_historical_features``)
TRAINING_SERVICE = "engagement_training_v1"
#: the same features at request time (``get_online_features``)
SERVING_SERVICE = "engagement_serving_v1"
#: the user-keyed views the API shows as ``User.onlineFeatures``
USER_VIEWS = ("user_profile", "user_playback", "user_reviews", "user_graph")
#: the movie graph view (degrees, credit counts, PageRank)
MOVIE_GRAPH_VIEW = "movie_graph"
#: the on-demand view computed at request time
AFFINITY_VIEW = "user_movie_affinity"
#: the movie views a new title's content reaches at once (``addMovie`` pushes them)
MOVIE_PROFILE_VIEW = "movie_profile"
MOVIE_EMBEDDING_VIEW = "movie_embedding"
