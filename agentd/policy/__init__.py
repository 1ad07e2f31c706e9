"""Policy: the one decision point for every tool, model, message, control and registration call.

`decide(Request)` answers allow, deny or approval_required and names the rule that decided, in
three steps: Casbin access rules (policy.csv under model.conf: deny by default, an explicit deny
wins), then argument constraints for `tool:*` objects (constraints.toml, declarative, no eval),
then `[[taint]]` rules for a request from a run tainted by untrusted content, then approval
rules. Rate limits (limits.toml) are token buckets in `RateLimiter`. This package
only decides: its only I/O is reading its own policy files. See README.md in this directory.
"""

from ._approval import ApprovalBinding, args_digest, canonical_args
from ._checks import url_host
from ._constraints import ApprovalCheck, ArgumentCheck, ConstraintSet
from ._decision import DecisionPoint, Explanation, RuleTrace
from ._errors import PolicyError, PolicyProblem
from ._golden import GoldenReport, GoldenResult, run_golden_tables
from ._limits import RateKey, RateLimit, RateLimiter, RateLimits
from ._model import AccessModel
from ._policy import Policy, PolicyFiles, load_policy, policy_version
from ._request import Decision, Effect, Request, Stage
from ._rules import AccessIndex, AccessRule, RoleLink
from ._taint_rules import TaintRule

__all__ = [
    # deciding
    "Decision",
    "DecisionPoint",
    "Effect",
    "Explanation",
    "Request",
    "RuleTrace",
    "Stage",
    # loading
    "Policy",
    "PolicyError",
    "PolicyFiles",
    "PolicyProblem",
    "load_policy",
    "policy_version",
    # the parts of a policy
    "AccessIndex",
    "AccessModel",
    "AccessRule",
    "ApprovalCheck",
    "ArgumentCheck",
    "ConstraintSet",
    "RoleLink",
    "TaintRule",
    "url_host",
    # rate limits
    "RateKey",
    "RateLimit",
    "RateLimiter",
    "RateLimits",
    # approvals
    "ApprovalBinding",
    "args_digest",
    "canonical_args",
    # golden tables
    "GoldenReport",
    "GoldenResult",
    "run_golden_tables",
]
