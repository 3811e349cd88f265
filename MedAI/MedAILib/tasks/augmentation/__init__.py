"""GAN augmentation: a label-conditioned image generator trained on a task's own labelled cases
(:mod:`.label_gan`), whose synthetic (image, label) pairs are mixed into the own-data segmentation
trainer by ``--synthetic-ratio`` (:func:`MedAILib.tasks.segmentation.own_data.train_own`)."""
