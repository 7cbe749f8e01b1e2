"""Fleet alerts (`eximtrack alerts`): rules over the aggregate views (rules.py, evaluate.py), alert states
(state.py) kept in the `alerts` table (table.py, migration 015), notifications by webhook and e-mail
(notify.py), running them (runner.py: `alerts run`, the sink's `--alerts`, `alerts test`), the command
(cli.py). docs/ALERTS.md."""
