"""The LabError a failed hub call becomes: what failed, where, and the fix."""

from __future__ import annotations

from dataclasses import dataclass

from evallab.errors import HubUnreachableError, LabError
from evallab.hub_retry.classify import Failure
from evallab.hub_retry.policy import RepoType

__all__ = ["HubCall", "hub_error"]


@dataclass(frozen=True)
class HubCall:
    endpoint: str
    doing: str
    repo_type: RepoType
    repo: str
    revision: str

    @property
    def target(self) -> str:
        kind = "dataset " if self.repo_type == "dataset" else ""
        return f"{kind}{self.repo}" + (f"@{self.revision}" if self.revision else "")

    @property
    def download_hint(self) -> str:
        kind = " --repo-type dataset" if self.repo_type == "dataset" else ""
        rev = f" --revision {self.revision}" if self.revision else ""
        return f"`hf download {self.repo}{kind}{rev}`"


def _offline_fix(call: HubCall) -> str:
    return (
        f"or set HF_HUB_OFFLINE=1 and use a snapshot downloaded beforehand ({call.download_hint} "
        "on a machine with network access, same HF_HOME)"
    )


def hub_error(
    call: HubCall, failure: Failure, attempts: int, seconds: float, error: type[LabError]
) -> LabError:
    where = f"the Hugging Face hub at {call.endpoint}"
    head = f"can't {call.doing} {call.target}"
    tried = f"gave up after {attempts} attempt{'s' if attempts != 1 else ''} in {seconds:.1f} s"
    if failure.kind == "network":
        # A server that accepted the connection but went silent is not "unreachable".
        silent = failure.cause.startswith(("ReadTimeout", "WriteTimeout", "RemoteProtocolError"))
        state = "did not answer in time" if silent else "can't be reached"
        return HubUnreachableError(
            f"{head}: {where} {state} ({failure.cause}; {tried})",
            value=call.endpoint,
            fix=f"check network access to {call.endpoint} and HF_ENDPOINT (unset it to use "
            "https://huggingface.co); gated models also need HF_TOKEN; " + _offline_fix(call),
        )
    if failure.kind == "status" and failure.transient:
        busy = "is rate-limiting the lab" if failure.status == 429 else "is failing or busy"
        return HubUnreachableError(
            f"{head}: {where} {busy} ({failure.cause}; {tried})",
            value=call.endpoint,
            fix="try again later (a campaign retries a transient failure on its own); check the "
            "hub's status page and HF_ENDPOINT; an authenticated HF_TOKEN has higher rate limits; "
            + _offline_fix(call),
        )
    if failure.kind == "offline":
        return error(
            f"{head}: HF_HUB_OFFLINE is set and the local Hugging Face cache doesn't hold it "
            f"({failure.cause})",
            value=call.target,
            fix=f"download it once with network access ({call.download_hint}, same HF_HOME), "
            "or unset HF_HUB_OFFLINE",
        )
    if failure.kind == "endpoint":
        return error(
            f"{head}: the hub URL {call.endpoint} is not a usable http(s) URL ({failure.cause})",
            value=call.endpoint,
            fix="set HF_ENDPOINT to a URL such as https://huggingface.co, or unset it",
        )
    if failure.kind == "answer":
        return error(
            f"{head}: {where} answered something that is not the hub API ({failure.cause})",
            value=call.endpoint,
            fix="check that HF_ENDPOINT points at a Hugging Face hub, not a proxy's error page",
        )
    if failure.kind == "request":
        return error(
            f"{head}: {failure.cause}",
            value=call.target,
            fix="repository ids look like 'org/name'; check the campaign or watch list",
        )
    return _refusal(call, failure, where, head, error)


def _refusal(
    call: HubCall, failure: Failure, where: str, head: str, error: type[LabError]
) -> LabError:
    said = f"{where} answered {failure.cause}"
    page = f"{call.endpoint}/{'datasets/' if call.repo_type == 'dataset' else ''}{call.repo}"
    token_fix = (
        "set HF_TOKEN to a token of an account that may read it (for a gated model, accept "
        f"its terms at {page} first)"
    )
    if failure.status == 401 and "credentials" in failure.auth_message.lower():
        fix = "HF_TOKEN is invalid or expired: create a new read token and export it"
    elif failure.code == "GatedRepo" or failure.status == 403:
        fix = f"{token_fix}, {_offline_fix(call)}"
    elif failure.code == "RevisionNotFound":
        fix = (
            f"check the revision {call.revision!r}: it must be a branch, a tag or a full commit "
            f"sha that exists in {call.repo} (see {page}/commits/main)"
        )
    elif failure.code == "EntryNotFound":
        fix = f"check the file name against the repository's files ({page}/tree/main)"
    elif failure.status in (401, 404):
        fix = (
            f"check the repository id {call.repo!r} (org and name, case included); a private "
            f"or gated repository also answers this way without a token: {token_fix}"
        )
    else:
        fix = "check the repository id and revision, and that HF_ENDPOINT points at a hub"
    return error(f"{head}: {said} (not retried: waiting won't change it)", value=page, fix=fix)
