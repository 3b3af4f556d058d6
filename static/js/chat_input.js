// Chat runs (trained with columns.messages or columns.chat_template) answer in their chat template,
// multi-turn: the inputs box holds one conversation, a turn per "role: text" line (system, user,
// assistant; a line without a role continues the turn above it, and a first line without one is the
// user's). The answer is the next assistant turn; "Continue" puts it into the box with a new "user: ".
import { el } from "./common.js";

const ROLE_LINE = /^(system|user|assistant)\s*:\s?(.*)$/i;

export function isChatRun(run) {
  const columns = (run && run.config && run.config.columns) || {};
  return run && run.task === "causal_lm" && Boolean(columns.messages || columns.chat_template);
}

export const CHAT_PLACEHOLDER = "system: You are a concise assistant.\nuser: What is the capital of Japan?\nassistant: Tokyo.\nuser: How many letters does it have?";

// The conversation typed in the box as [{role, content}], or a message saying what is wrong.
export function parseConversation(text) {
  const turns = [];
  for (const line of text.split("\n")) {
    const match = line.match(ROLE_LINE);
    if (match) turns.push({ role: match[1].toLowerCase(), content: match[2] });
    else if (turns.length) turns[turns.length - 1].content += `\n${line}`;
    else if (line.trim()) turns.push({ role: "user", content: line });
  }
  for (const turn of turns) turn.content = turn.content.trim();
  if (!turns.some((t) => t.role === "user" && t.content)) return { error: "Type at least one user turn (a line “user: …”)." };
  return { turns };
}

// A button under the answers that carries the adapted model's answer into the box for the next turn.
export function continueButton(textarea, reply) {
  const button = el("button", { type: "button", class: "btn btn-small", "data-action": "continue" }, "Continue the conversation");
  button.addEventListener("click", () => {
    textarea.value = `${textarea.value.trimEnd()}\nassistant: ${reply}\nuser: `;
    textarea.focus();
  });
  return button;
}
