package domain

// Word lists for Seed: enough variety that a seeded instance looks like a
// real company's.
var (
	firstNames = []string{"alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
		"mallory", "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "ursula", "victor", "wendy",
		"amara", "bruno", "chen", "dmitri", "elena", "farah", "goran", "hiro", "ines", "jonas",
		"kenji", "leila", "mateo", "nadia", "oskar", "priya", "quentin", "rosa", "sanjay", "tomas",
		"yuki", "zara", "aiko", "björn", "chloé", "diego", "emeka", "fatima", "gustav", "hana"}
	lastNames = []string{"smith", "johnson", "garcia", "martin", "muller", "rossi", "kowalski", "novak", "silva", "tanaka",
		"kim", "nguyen", "okafor", "andersson", "dubois", "fischer", "ivanova", "jensen", "kaur", "lopez",
		"moreau", "nakamura", "olsen", "petrov", "quinn", "rahman", "schmidt", "takahashi", "umar", "varga",
		"weber", "xu", "yilmaz", "zhang", "bauer", "costa", "dias", "eriksen", "ferrari", "gomez"}
	projectNames = []string{"Platform", "Infrastructure", "Mobile", "Payments", "Search", "Data", "Identity", "Billing",
		"Web", "Tools", "Security", "Analytics", "Messaging", "Storage", "Networking", "Observability",
		"Checkout", "Catalog", "Logistics", "Machine Learning", "Design System", "Growth", "Support", "Compliance"}
	repoNames = []string{"api", "web-app", "backend", "frontend", "infra-config", "deploy-scripts", "docs", "sdk-go",
		"sdk-java", "cli", "gateway", "auth-service", "scheduler", "worker", "ui-components", "terraform",
		"helm-charts", "load-tests", "e2e-tests", "proto", "event-bus", "ledger", "notifications", "search-indexer",
		"image-resizer", "feature-flags", "admin-console", "mobile-ios", "mobile-android", "data-pipeline"}
	prVerbs      = []string{"Fix", "Add", "Refactor", "Remove", "Improve", "Speed up", "Document", "Test", "Simplify", "Harden"}
	prThings     = []string{"retry logic", "pagination", "the login flow", "rate limiting", "cache invalidation", "error handling", "metrics", "connection pooling", "input validation", "the build", "logging", "timeouts", "the migration", "CSV export", "dark mode", "webhooks", "audit trail", "the scheduler", "TLS settings", "feature flag cleanup"}
	prPlaces     = []string{"the API", "the worker", "the gateway", "checkout", "the admin console", "the CLI", "search", "the importer", "notifications", "the dashboard"}
	depNames     = []string{"golang.org/x/net", "react", "spring-boot", "jackson-databind", "lodash", "protobuf", "grpc", "postgresql driver", "log4j", "webpack"}
	branchTopics = []string{"retry", "paging", "login", "ratelimit", "cache", "errors", "metrics", "pool", "validation", "build", "logging", "timeouts", "migration", "export", "ui", "webhooks", "audit"}
	commentTexts = []string{
		"Looks good to me.", "Could we add a test for the empty case?", "Nit: this name is a bit vague.",
		"Why not reuse the existing helper here?", "This will need a migration note in the changelog.",
		"LGTM once CI is green.", "Have you measured the impact on p99 latency?", "I think this breaks the old clients.",
		"Can you split this into two commits?", "Nice cleanup!", "Please rebase on main.", "Is this behind a feature flag?",
		"What happens if the context is cancelled here?", "The error message should say which field is wrong.",
		"Approved, but let's follow up on the docs.", "This duplicates the logic in the importer.",
		"Thanks, this fixes the flaky test for me.", "Minor: missing newline at end of file.",
	}
	descriptionTexts = []string{
		"This change is covered by new unit tests.", "Follow-up to the incident review.",
		"See the linked ticket for background.", "No behaviour change intended.",
		"Benchmarks show a clear improvement on the hot path.", "Requested by the support team.",
		"Part of the effort to reduce on-call noise.", "Behind a feature flag, off by default.",
	}
)
