"""The static report site: leaderboard, campaign matrices, histories, comparisons, runs."""

from evallab.report.leaderboard import primary_metric
from evallab.report.site import SiteSummary, build_site

__all__ = ["SiteSummary", "build_site", "primary_metric"]
