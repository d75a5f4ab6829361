"""Recommendations as the API shows them, from whichever ``Recommender`` is plugged in."""

from __future__ import annotations

import strawberry

from api.context import Info
from api.recommendations.contract import RecommendationRequest
from api.types.movie import Movie
from api.types.paging import check_first


@strawberry.type(description="One recommended movie.")
class Recommendation:
    movie: Movie
    score: float = strawberry.field(description="The recommender's score; higher is better (scale is model-specific).")
    rank: int = strawberry.field(description="1 for the best.")
    explanation: str = strawberry.field(description="Why this movie, e.g. a person shared with a movie you rated.")


@strawberry.type(description="A ranked list of recommendations for one user.")
class RecommendationList:
    items: list[Recommendation]
    model_version: str = strawberry.field(description="Which recommender (and model checkpoint) produced the list.")
    degraded: bool = strawberry.field(
        description="True when a store or the model was unavailable and a simpler fallback answered."
    )


async def recommend(info: Info, *, user_id: int, first: int, exclude_seen: bool) -> RecommendationList:
    check_first(first)
    request = RecommendationRequest(user_id, first, exclude_seen)
    answer = await info.context.services.batcher.recommend(request)  # NOT_FOUND for unknown users
    loaders = info.context.loaders
    loaders.user.prime(user_id, answer.user)
    for movie_id, movie in answer.movies.items():
        loaders.movie.prime(movie_id, movie)
    result = answer.result
    items = [
        Recommendation(movie=Movie.from_row(row), score=item.score, rank=item.rank, explanation=item.explanation)
        for item in result.items
        if (row := answer.movies.get(item.movie_id)) is not None
    ]
    return RecommendationList(items=items, model_version=result.model_version, degraded=result.degraded)
