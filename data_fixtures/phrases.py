"""Text templates shared by the fixture generator and the default signals config.

The generator draws the customer's opening message from ``INTENT_OPENINGS`` and the
assistant's turns from the other lists; ``configs/signals.yaml`` holds the rules that
recover them. Keeping the phrasing in one module is what lets tests score extraction
against the generator's own labels (intent accuracy, exact behaviour flags).
"""

from __future__ import annotations

# Intents the simulated agent sees. ``transactional`` intents are the ones where the
# simulated agent tends to ask for the email early (the confounding of the PSM fixture).
INTENTS: tuple[str, ...] = (
    "order_status",
    "refund_request",
    "cancel_subscription",
    "update_payment",
    "password_reset",
    "product_question",
    "complaint",
    "shipping_address",
)
TRANSACTIONAL_INTENTS: frozenset[str] = frozenset(
    {"order_status", "refund_request", "cancel_subscription", "update_payment", "shipping_address"}
)

# Several paraphrases per intent for the customer's opening message. ``{pii}`` is replaced
# with a fake email or phone number (or nothing) so PII appears in raw text.
INTENT_OPENINGS: dict[str, tuple[str, ...]] = {
    "order_status": (
        "Hi, where is my order? It was supposed to arrive yesterday. {pii}",
        "Can you track my package please, order number {order}",
        "I still haven't received my order {order}, any update on the delivery?",
        "hello, my delivery is late. what's the status of order {order}? {pii}",
    ),
    "refund_request": (
        "I want a refund for order {order}, the item was broken. {pii}",
        "Please refund me, I returned the product two weeks ago",
        "How do I get my money back for {order}?",
        "I'd like to request a refund, the size was wrong {pii}",
    ),
    "cancel_subscription": (
        "I need to cancel my subscription. {pii}",
        "How can I cancel my membership? I don't use it anymore",
        "Please stop my subscription from renewing next month",
        "cancel my plan please, reach me at {pii}",
    ),
    "update_payment": (
        "My card expired, how do I update my payment method? {pii}",
        "I need to change the credit card on my account",
        "Payment failed on my account, can I add a new card?",
        "update billing details please, new card ends in {card4}",
    ),
    "password_reset": (
        "I can't log in, I forgot my password. {pii}",
        "Password reset link isn't working for me",
        "Locked out of my account, need to reset my password",
        "how do i reset my login password? {pii}",
    ),
    "product_question": (
        "Does the blender come with a warranty?",
        "Is this jacket waterproof? Thinking of buying it {pii}",
        "What's the difference between the basic and pro model?",
        "Quick product question: is it compatible with iPhone?",
    ),
    "complaint": (
        "This is the worst service I've ever had, I'm very unhappy. {pii}",
        "I want to file a complaint about your courier, he was rude",
        "Really disappointed, nobody answered my last three messages",
        "I am frustrated, your app keeps crashing and nobody helps {pii}",
    ),
    "shipping_address": (
        "I need to change the shipping address on my order {order}. {pii}",
        "Can I send my package to a different address?",
        "Wrong delivery address on {order}, please update it",
        "I moved, please ship to my new address {pii}",
    ),
}

# The assistant's email request: the behaviour ``asked_email_first`` looks for it.
EMAIL_REQUESTS: tuple[str, ...] = (
    "Could you share the email address on your account?",
    "Can I get your email address so I can look this up?",
    "What's the email address associated with your account?",
    "Before we finish, could you confirm your email address for the follow-up?",
)

ASSISTANT_GREETINGS: tuple[str, ...] = (
    "Thanks for reaching out, I'm happy to help with that.",
    "Hi! Let me help you with this.",
    "Sorry to hear that, let's sort it out together.",
)
ASSISTANT_ANSWERS: tuple[str, ...] = (
    "I've checked the details and here is what I found.",
    "Here is what you can do next.",
    "I've gone ahead and updated this for you.",
    "Thanks for your patience, everything is in place now.",
)
USER_FOLLOWUPS: tuple[str, ...] = (
    "Thanks, that helps.",
    "Ok, and how long will that take?",
    "Great, thank you!",
    "Hmm, I'm not sure that solves it.",
)
# Transcript-derived outcome: the agent declaring the ticket resolved (agent-controlled).
AGENT_CLOSINGS: tuple[str, ...] = (
    "I've marked this ticket as resolved. Have a great day!",
    "Your ticket is now closed as resolved.",
)
AGENT_SIGNOFFS: tuple[str, ...] = (
    "Is there anything else I can help you with?",
    "Let me know if you need anything else.",
)

# Tools the simulated agent can call, and the tool result text.
TOOLS: tuple[str, ...] = ("lookup_order", "issue_refund", "reset_password", "kb_search")
TOOL_RESULTS: dict[str, str] = {
    "lookup_order": "order {order}: shipped, carrier tracking in transit",
    "issue_refund": "refund created for {order}",
    "reset_password": "password reset link sent to {email}",
    "kb_search": "3 articles found",
}

# Intents where the order number matters: tier2 queues call ``lookup_order`` for most of
# them once the tool is rolled out (the DiD fixture).
ORDER_INTENTS: frozenset[str] = frozenset({"order_status", "shipping_address", "refund_request"})

# The customer's answer to an email request; ``{email}`` is a fake address, so the raw
# transcript carries PII for the redaction step to remove.
USER_EMAIL_REPLIES: tuple[str, ...] = (
    "Sure, it's {email}",
    "{email}",
    "It's {email}, thanks.",
    "my email is {email}",
    "You can use {email}",
)

# Optional leading system message (platform context injected before the customer speaks).
SYSTEM_PROMPTS: tuple[str, ...] = (
    "Conversation started via {channel}. Routed to queue {skill}.",
    "Session opened on {channel}; agent build {agent_version}.",
    "New {channel} session. Customer context loaded.",
)

# Text of the assistant row that carries a tool call (``tool_name`` is set on that row).
TOOL_CALL_TEXT: str = "Calling {tool}"
