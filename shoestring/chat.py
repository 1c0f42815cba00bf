"""chat.py: run_chat, the terminal chat over a Model (`shoestring chat`, and after training).

Interactive (stdin is a terminal): a banner, the prompt `you> `, the reply streamed token by token
after `bot> `. Commands: /reset forgets the conversation, /help lists commands; `exit`, `quit`,
`q`, `:q` or end of input (Ctrl-D) leave with status 0. Empty lines are ignored. Ctrl-C during a
reply stops that reply and returns to the prompt; Ctrl-C at the prompt leaves with status 130.

Scripted (stdin is not a terminal): no banner and no prompts; each input line is one user turn
and each reply is printed on one line (a newline inside a reply becomes a space); the same
commands work; the end of input ends the session with status 0.

Start-up is kept short: the C module and the checkpoint are loaded only after the arguments are
parsed, and nothing else heavy happens before the first prompt.
"""
import sys

EXIT_WORDS = ("exit", "quit", "q", ":q")
HELP = """commands:
  /reset   forget the conversation (the model's memory starts afresh)
  /help    this list
  exit, quit, q, :q or Ctrl-D   leave
Ctrl-C stops a reply; at the prompt it leaves."""


def _read_line(stdin, stdout, prompt, interactive):
    """One input line without its newline, or None at end of input."""
    if interactive and stdin is sys.stdin and stdout is sys.stdout:
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:
            pass
        try:
            return input(prompt)
        except EOFError:
            return None
    if interactive:
        stdout.write(prompt)
        stdout.flush()
    line = stdin.readline()
    if not line:
        return None
    return line.rstrip("\r\n")


def run_chat(model, max_response=260, temperature=0.8, top_k=40, top_p=0.95, seed=None,
             stdin=None, stdout=None, banner=True):
    """Chat with `model` over stdin/stdout until the user leaves; returns the exit status
    (0, or 130 after Ctrl-C at the prompt). banner=False: no banner on a terminal."""
    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    try:
        interactive = stdin.isatty()
    except (AttributeError, ValueError):
        interactive = False
    session = model.chat(max_response=max_response, temperature=temperature, top_k=top_k,
                         top_p=top_p, seed=seed)
    if interactive and banner:
        stdout.write("shoestring chat: %s\n" % model.describe())
        stdout.write("Type a message and press Enter; /help for commands; exit or Ctrl-D to leave.\n")
        stdout.flush()
    while True:
        try:
            line = _read_line(stdin, stdout, "you> ", interactive)
        except KeyboardInterrupt:
            stdout.write("\n")
            stdout.flush()
            return 130
        if line is None:
            if interactive:
                stdout.write("\n")
                stdout.flush()
            return 0
        text = line.strip()
        if not text:
            continue
        if text.lower() in EXIT_WORDS:
            return 0
        if text.startswith("/"):
            cmd = text.split()[0].lower()
            if cmd == "/reset":
                session.reset()
                if interactive:
                    stdout.write("(conversation reset)\n")
            elif cmd == "/help":
                stdout.write(HELP + "\n")
            else:
                stdout.write("unknown command %s (/help lists the commands)\n" % cmd)
            stdout.flush()
            continue
        if interactive:
            stdout.write("bot> ")
            stdout.flush()
        reply = session.send(text, stream=True)
        try:
            for piece in reply:
                if not interactive:
                    piece = piece.replace("\r", " ").replace("\n", " ")
                stdout.write(piece)
                stdout.flush()
        except KeyboardInterrupt:
            stdout.write(" [stopped]" if interactive else "")
        finally:
            reply.close()          # closes the turn in the model's state even when cut short
        stdout.write("\n")
        stdout.flush()

