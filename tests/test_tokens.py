from bespoke import tokens


def test_clip_tokenizer_matches_the_reference_ids(tok_dir):
    tok = tokens.load(tok_dir)
    assert tok("a photo of a cat")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_both_tokenizers_in_sd_scripts_cache_layout(tok_dir):
    assert (tok_dir / "openai_clip-vit-large-patch14" / "vocab.json").is_file()
    assert (tok_dir / "laion_CLIP-ViT-bigG-14-laion2B-39B-b160k" / "merges.txt").is_file()
    assert tokens.present(tok_dir)
    from transformers import CLIPTokenizer

    big_g = CLIPTokenizer.from_pretrained(str(tok_dir / "laion_CLIP-ViT-bigG-14-laion2B-39B-b160k"))
    assert big_g.pad_token == "!" and big_g.model_max_length == 77


def test_count_excludes_bos_and_eos(tok_dir):
    assert tokens.count(["a photo of a cat", ""], tok_dir) == [5, 0]


def test_the_users_example_caption_is_over_75_tokens(tok_dir):
    example = (
        "pixel art, 24x24, portrait of bespoke punk lady, long textured curly multicolored brown hair with yellow "
        "accessory (#a0b1a6), wearing dark red maroon rimmed glasses, wearing white diamond earring (#27181f), "
        "light green pale green eyes (#4f2526), lips (#94584b), medium dark skin tone (#94584b), grey background "
        "(#a0b1a6), grey turtleneck (#3e373e), palette: #a0b1a6, #4f2526, #94584b, #3e373e, #27181f, sharp pixel "
        "edges, hard color borders, retro pixel art style")
    (n,) = tokens.count([example], tok_dir)
    assert n > 150  # hex colours cost a token per character
