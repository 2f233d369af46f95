// The node-llama-cpp sidecar of ffe_agents.llm.node_backend: one GGUF model, requests as JSON
// lines on stdin, replies as JSON lines on stdout (nothing else is written there). Chats run
// one at a time, in arrival order; a chat whose cancel arrives before it starts never starts,
// and one cancelled while it generates stops at its next token (or, with abort: false, runs on
// and counts the tokens it produced after the cancel).
//
//   {"id": 1, "op": "load", "model": "/path.gguf", "context": 2048, "threads": 1}
//   {"id": 2, "op": "chat", "messages": [{"role": "system", "content": "..."}, ...],
//    "schema": {...}, "max_tokens": 112, "temperature": 0, "seed": 0}
//   {"id": 3, "op": "cancel", "target": 2, "abort": true}
//   {"id": 4, "op": "tokenize", "text": "..."}
// Replies: {"id": n, "ok": true, ...} or {"id": n, "ok": false, "error": "..."}.
import {getLlama, LlamaChatSession, LlamaGrammar, JinjaTemplateChatWrapper} from "node-llama-cpp";
import fs from "node:fs";
import readline from "node:readline";

const VERSION = JSON.parse(fs.readFileSync(
  new URL("./node_modules/node-llama-cpp/package.json", import.meta.url), "utf8")).version;

const send = (msg) => process.stdout.write(JSON.stringify(msg) + "\n");
let llama = null, model = null, context = null, sequence = null, wrapper = undefined;
const cancels = new Map(); // chat id -> {abort, at}
const running = new Map(); // chat id -> {controller, afterCancel}
let queue = Promise.resolve();

async function load(req) {
  llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
  model = await llama.loadModel({modelPath: req.model});
  context = await model.createContext({contextSize: req.context, threads: req.threads});
  sequence = context.getSequence();
  const template = model.fileInfo.metadata?.tokenizer?.chat_template;
  // the GGUF's own chat template, as llama-cpp-python renders it (not a built-in wrapper)
  wrapper = template ? new JinjaTemplateChatWrapper({template}) : undefined;
  return {binding: "node-llama-cpp", version: VERSION,
          llama_cpp: llama.llamaCppRelease?.release ?? null, template: template ? "gguf" : "default"};
}

// node-llama-cpp's JSON-schema grammar lets the model indent (a newline and four spaces per
// level), which costs a small model most of its token budget; llama-cpp-python's allows one
// optional space. Its whitespace rules are rewritten to that: `[ ]?`.
const WS = /^((?:comma-)?whitespace-b-\d+-\d+-rule) ::= .*$/gm;

async function compactGrammar(schema) {
  const json = await llama.createGrammarForJsonSchema(schema);
  let n = 0;
  const text = json.grammar.replace(WS, (_, name) => {
    n += 1;
    return `${name} ::= ${name.startsWith("comma-") ? '"," [ ]?' : "[ ]?"}`;
  });
  if (n === 0) return {grammar: json, compact: false};
  return {grammar: new LlamaGrammar(llama, {grammar: text,
    stopGenerationTriggers: json.stopGenerationTriggers,
    trimWhitespaceSuffix: json.trimWhitespaceSuffix}), compact: true};
}

function history(messages) {
  const items = [];
  for (const m of messages) {
    if (m.role === "system") items.push({type: "system", text: m.content});
    else if (m.role === "assistant") items.push({type: "model", response: [m.content]});
    else items.push({type: "user", text: m.content});
  }
  return items;
}

async function chat(req) {
  const cancelled = cancels.get(req.id);
  if (cancelled) return {finish: "not_started", text: "", prompt_tokens: 0, completion_tokens: 0};
  const last = req.messages[req.messages.length - 1];
  if (!last || last.role !== "user") throw new Error("the last message must be the user's");
  const session = new LlamaChatSession({contextSequence: sequence, chatWrapper: wrapper,
    autoDisposeSequence: false});
  session.setChatHistory(history(req.messages.slice(0, -1)));
  const {grammar, compact} = await compactGrammar(req.schema);
  const controller = new AbortController();
  const state = {controller, afterCancel: 0, tokens: 0};
  running.set(req.id, state);
  if (cancels.get(req.id)?.abort) controller.abort(); // cancelled while its grammar was built
  try {
    let res;
    try {
      res = await session.promptWithMeta(last.content, {
        grammar, maxTokens: req.max_tokens, temperature: req.temperature, seed: req.seed,
        signal: controller.signal, stopOnAbortSignal: true,
        onToken: (tokens) => {
          state.tokens += tokens.length;
          const c = cancels.get(req.id);
          if (c && !c.abort) state.afterCancel += tokens.length; // left running, counted
        }});
    } catch (err) {
      if (!controller.signal.aborted) throw err;
      // aborted before its first token (in the prefill): node-llama-cpp throws then
      return {text: "", finish: "abort", completion_tokens: state.tokens, prompt_tokens: 0,
              tokens_after_cancel: 0, compact_grammar: compact};
    }
    const finish = {maxTokens: "length", abort: "abort"}[res.stopReason] ?? "stop";
    return {text: res.responseText, finish, completion_tokens: state.tokens,
            prompt_tokens: Math.max(sequence.contextTokens.length - state.tokens, 0),
            tokens_after_cancel: state.afterCancel, compact_grammar: compact};
  } finally {
    running.delete(req.id);
    cancels.delete(req.id);
    session.dispose({disposeSequence: false});
  }
}

function cancel(req) {
  cancels.set(req.target, {abort: req.abort !== false});
  const state = running.get(req.target);
  if (state && req.abort !== false) state.controller.abort();
  return {};
}

async function handle(req) {
  try {
    let out;
    if (req.op === "cancel") out = cancel(req);
    else if (req.op === "load") out = await load(req);
    else if (req.op === "chat") out = await chat(req);
    else if (req.op === "tokenize") out = {n: model.tokenize(req.text, true).length + (model.tokens.bos == null ? 0 : 1)};
    else throw new Error(`unknown op ${JSON.stringify(req.op)}`);
    send({id: req.id, ok: true, ...out});
  } catch (err) {
    send({id: req.id, ok: false, error: String(err?.message ?? err)});
  }
}

readline.createInterface({input: process.stdin}).on("line", (line) => {
  let req;
  try {
    req = JSON.parse(line);
  } catch {
    send({id: null, ok: false, error: `not JSON: ${line.slice(0, 80)}`});
    return;
  }
  // cancel and tokenize are answered at once (tokenize reads only the vocabulary, so it never
  // waits behind a generation); chats and the load run one at a time, in arrival order
  if (req.op === "cancel" || (req.op === "tokenize" && model)) handle(req);
  else queue = queue.then(() => handle(req));
}).on("close", () => process.exit(0));
